"""FrameLMImageProcessor: resize, centre-crop, rescale and normalize in batched torch, without torchvision.

Hub payload: imports the standard library, torch, numpy, the public transformers API and its siblings only.

Why not transformers' own processors: its fast (`TorchvisionBackend`) processors need torchvision, and its
`*ImageProcessorPil` classes resize through PIL and rescale and normalize in float64 NumPy, one image at a time. Here
the frames of a video go through one uint8 channels-last `torch.nn.functional.interpolate(..., antialias=True)`
(`preprocess_frames`), and a list of images through one such call per image, read in place from PIL's own memory and
written straight into its slot of the output batch. torch's uint8 antialiased kernel is PIL's algorithm (same bicubic
a=-0.5 and bilinear kernels, support widened when shrinking, uint8 rounding and clamping after each pass) with 16-bit
instead of 22-bit fixed-point weights, so a value lying within ~0.001 of a rounding boundary can round the other way:
outputs equal SigLIP's and CLIP's PIL processors for over 98% of values, differ by 1 grey level for the rest, and by 2
for at most a few values in 100,000 where both passes round the other way (`tests/test_image_processing.py`,
`bench/preprocessing.py`). Two float32 interpolate passes rounded in between like PIL would round the other way far
less often, but measured 20x slower than the uint8 kernel.
Rescale and normalize are folded into one multiply and one subtract (`x * (rescale_factor / std) - mean / std`).

Settings and their names follow transformers (`size`, `resample`, `do_center_crop`, `crop_size`, `do_rescale`,
`rescale_factor`, `do_normalize`, `image_mean`, `image_std`, `do_convert_rgb`), so `preprocessor_config.json` reads
like any SigLIP/CLIP one, and `from_tower_processor` copies them from the tower's own processor.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BaseImageProcessor, BatchFeature

from .inputs_framelm import FrameLMImagesKwargs
from .media_framelm import composite_on_white, load_image

# PIL's resampling enum values (PIL.Image.Resampling), stored as plain ints as transformers does.
PIL_BILINEAR = 2
PIL_BICUBIC = 3
RESAMPLE_MODES = {PIL_BILINEAR: "bilinear", PIL_BICUBIC: "bicubic"}
RESAMPLE_NAMES = {"bilinear": PIL_BILINEAR, "bicubic": PIL_BICUBIC}
SIZE_FORMS = "{'height': H, 'width': W} (squash) or {'shortest_edge': S} (keep aspect ratio)"
SETTINGS = tuple(name for name in FrameLMImagesKwargs.__annotations__ if name != "return_tensors")


def _size_dict(size, name: str) -> dict[str, int]:
    """An int, an (h, w) pair, a dict or a transformers SizeDict -> {"height", "width"} or {"shortest_edge"}."""
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    try:
        given = {key: value for key, value in dict(size).items() if value is not None}  # SizeDict yields pairs
    except (TypeError, ValueError):
        given = {}
    if set(given) == {"height", "width"}:
        return {"height": int(given["height"]), "width": int(given["width"])}
    if set(given) == {"shortest_edge"} and name == "size":
        return {"shortest_edge": int(given["shortest_edge"])}
    forms = SIZE_FORMS if name == "size" else "{'height': H, 'width': W}"
    raise ValueError(f"{name}={size!r} is not supported by FrameLMImageProcessor; use {forms}")


def _resample_id(resample) -> int:
    """PIL enum or int, or a name (torchvision's InterpolationMode is read by its value) -> PIL's int for it."""
    if isinstance(resample, int):
        if int(resample) in RESAMPLE_MODES:
            return int(resample)
    else:
        name = getattr(resample, "value", resample)
        if isinstance(name, str) and name.lower() in RESAMPLE_NAMES:
            return RESAMPLE_NAMES[name.lower()]
    raise ValueError(
        f"resample={resample!r} is not supported; use bicubic (PIL 3) or bilinear (PIL 2): torch's antialiased "
        "interpolate matches PIL only for these two filters"
    )


def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else bool(value)


def _three(values, name: str) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * 3)]
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (one per RGB channel), got {values}")
    return values


def _describe(image) -> str:
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    return f"{type(image).__name__}" + (f" of shape {tuple(shape)} and dtype {dtype}" if shape is not None else "")


class FrameLMImageProcessor(BaseImageProcessor):
    """SigLIP/CLIP-style preprocessing (squash or shortest-edge resize, optional centre crop, rescale, normalize) in
    batched torch: one antialiased uint8 interpolate per image, or per video for `preprocess_frames`, then one
    folded rescale+normalize written straight into the output batch.

    Returns `pixel_values` as a float32 `(N, 3, H, W)` torch tensor whatever the input type.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = FrameLMImagesKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int | str = PIL_BICUBIC,
        do_center_crop: bool = False,
        crop_size: dict[str, int] | int | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        do_convert_rgb: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # None means "not set" (transformers writes `"do_convert_rgb": null` into configs): keep the default then
        self.do_resize = _flag(do_resize, True)
        self.size = _size_dict(size if size is not None else {"height": 224, "width": 224}, "size")
        self.resample = _resample_id(resample if resample is not None else PIL_BICUBIC)
        self.do_center_crop = _flag(do_center_crop, False)
        self.crop_size = _size_dict(crop_size, "crop_size") if crop_size is not None else None
        if self.do_center_crop and self.crop_size is None:
            raise ValueError("do_center_crop=True needs crop_size={'height': H, 'width': W}")
        self.do_rescale = _flag(do_rescale, True)
        self.rescale_factor = float(rescale_factor if rescale_factor is not None else 1 / 255)
        self.do_normalize = _flag(do_normalize, True)
        self.image_mean = _three(image_mean if image_mean is not None else 0.5, "image_mean")
        self.image_std = _three(image_std if image_std is not None else 0.5, "image_std")
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std={self.image_std} contains 0: normalizing would divide by zero")
        self.do_convert_rgb = _flag(do_convert_rgb, True)

    @classmethod
    def from_tower_processor(cls, tower_processor, size_override: int | None = None) -> FrameLMImageProcessor:
        """Copy the settings of a transformers SigLIP/CLIP/SigLIP2 image processor (PIL or torchvision class).

        Only attributes are read; the tower processor is never called, so torchvision is not needed.
        `size_override` forces a square `{"height": s, "width": s}` squash and turns the centre crop off: SigLIP2
        NaFlex processors have no fixed size, and a tower fed a fixed grid needs one.
        """

        def read(name: str):
            return getattr(tower_processor, name, None)  # None: the constructor keeps its default

        if size_override is not None:
            size, do_center_crop, crop_size = {"height": size_override, "width": size_override}, False, None
        else:
            size = read("size")
            if size is None:
                raise ValueError(
                    f"{type(tower_processor).__name__} has no fixed `size` (a SigLIP2 NaFlex processor sizes each "
                    "image by its patch budget); pass size_override=<side in pixels> to feed the tower a fixed grid"
                )
            do_center_crop = bool(read("do_center_crop"))
            crop_size = read("crop_size") if do_center_crop else None
        settings = ("do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
        return cls(
            size=size,
            do_center_crop=do_center_crop,
            crop_size=crop_size,
            do_convert_rgb=read("do_convert_rgb"),
            **{name: read(name) for name in settings},
        )

    def __call__(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def preprocess(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        """Images (PIL, paths, uint8 (H, W[, C]) arrays or tensors, or nested lists of them) -> `pixel_values`.

        Keyword arguments named like a setting (`size=...`, `do_normalize=False`, ...) override it for this call;
        None values are ignored, as transformers' processors pass every unset keyword as None.
        """
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}: FrameLMImageProcessor always returns torch tensors")
        settings = self._settings(kwargs)
        flat = self._flatten(images)
        if not flat:
            raise ValueError("no images given: pass a PIL image, a path, a uint8 (H, W, C) array or a list of them")
        arrays = [
            self._to_hwc_uint8(image, settings["do_convert_rgb"], where=f"image {i}") for i, image in enumerate(flat)
        ]
        shapes = [self._output_shape(array.shape[0], array.shape[1], settings) for array in arrays]
        if len(set(shapes)) > 1:
            other = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
            raise ValueError(
                f"image 0 ({tuple(arrays[0].shape[:2])}) becomes {shapes[0]} but image {other} "
                f"({tuple(arrays[other].shape[:2])}) becomes {shapes[other]}: with size={settings['size']} and no "
                "centre crop the output size follows the aspect ratio; set do_center_crop=True or a "
                "{'height', 'width'} size"
            )
        # One image at a time straight into its slot of the output: stacking same-size images first to resize them
        # in one call costs a copy of the full-size batch, which measured slower than the per-call overhead it saves.
        pixel_values = _empty((len(arrays), 3, *shapes[0]), torch.float32, arrays[0].device)
        for index, array in enumerate(arrays):
            self._transform(array[None], settings, out=pixel_values[index : index + 1])
        return BatchFeature(data={"pixel_values": pixel_values})

    def preprocess_frames(self, frames: torch.Tensor, **overrides) -> torch.Tensor:
        """uint8 `(N, H, W, 3)` channels-last frames of one video -> float32 `(N, 3, H', W')` in one batched resize.

        This is the video hot path: decoders (decord, PyAV) hand frames over in this layout, and no per-frame copy
        or PIL round trip is made. `overrides` are per-call settings, as for `preprocess`.
        """
        if isinstance(frames, np.ndarray):
            frames = _from_numpy(frames)
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"preprocess_frames expects uint8 frames of shape (N, H, W, 3), got {_describe(frames)}; "
                "stack the decoded RGB frames of one video channels-last"
            )
        if frames.dtype != torch.uint8:
            raise ValueError(
                f"preprocess_frames expects uint8 frames, got {frames.dtype}; decoders give uint8, convert floats in "
                "[0, 1] with (frames * 255).round().to(torch.uint8)"
            )
        if frames.shape[0] == 0:
            raise ValueError("preprocess_frames got 0 frames; a video needs at least one frame")
        return self._transform(frames, self._settings(overrides))

    def _settings(self, overrides: dict) -> dict:
        unknown = sorted(k for k, v in overrides.items() if v is not None and k not in SETTINGS)
        if unknown:
            raise TypeError(f"FrameLMImageProcessor got unknown keyword(s) {unknown}; settings are {list(SETTINGS)}")
        settings = {name: getattr(self, name) for name in SETTINGS}
        for name, value in overrides.items():
            if value is not None:
                settings[name] = value
        if overrides.get("size") is not None:
            settings["size"] = _size_dict(settings["size"], "size")
        if overrides.get("crop_size") is not None:
            settings["crop_size"] = _size_dict(settings["crop_size"], "crop_size")
        if overrides.get("resample") is not None:
            settings["resample"] = _resample_id(settings["resample"])
        if settings["do_center_crop"] and settings["crop_size"] is None:
            raise ValueError("do_center_crop=True needs crop_size={'height': H, 'width': W}")
        return settings

    @staticmethod
    def _flatten(images) -> list:
        if isinstance(images, (list, tuple)):
            return [leaf for item in images for leaf in FrameLMImageProcessor._flatten(item)]
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            return list(images)  # a stacked batch (N, H, W, C)
        return [images]

    @staticmethod
    def _to_hwc_uint8(image, do_convert_rgb: bool, where: str) -> torch.Tensor:
        """One input image -> a (H, W, 3) uint8 tensor (a view of the input where possible)."""
        if isinstance(image, (str, os.PathLike)) or (hasattr(image, "getpixel") and hasattr(image, "mode")):
            if isinstance(image, (str, os.PathLike)) or (image.mode != "RGB" and do_convert_rgb):
                image = load_image(image)  # RGB, with transparency composited and palette/16-bit modes fixed
            array = _from_numpy(np.asarray(image))
        elif isinstance(image, np.ndarray):
            array = _from_numpy(image)
        elif isinstance(image, torch.Tensor):
            array = image
        else:
            raise TypeError(
                f"{where}: cannot read {type(image).__name__} as an image; pass a PIL image, a path, or a uint8 "
                "(H, W, C) numpy array or torch tensor"
            )
        if array.dtype != torch.uint8:
            raise ValueError(
                f"{where}: expected uint8 pixels, got {_describe(image)}; convert floats in [0, 1] with "
                "(x * 255).round() and cast to uint8"
            )
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) == 0:
            looks_chw = array.ndim == 3 and array.shape[0] in (1, 3, 4)
            raise ValueError(
                f"{where}: expected a channels-last (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got "
                f"{_describe(image)}" + ("; it looks channels-first: use x.permute(1, 2, 0)" if looks_chw else "")
            )
        channels = array.shape[-1]
        if channels != 3 and not do_convert_rgb:
            raise ValueError(f"{where}: {channels}-channel image with do_convert_rgb=False; set do_convert_rgb=True")
        if channels == 1:
            array = array.expand(-1, -1, 3)
        elif channels == 4:
            array = composite_on_white(array)  # the one alpha rule, shared with load_image
        return array

    @staticmethod
    def _resized_size(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
        if "shortest_edge" not in size:
            return size["height"], size["width"]
        # Same arithmetic as transformers' get_resize_output_image_size(default_to_square=False): floor the long side
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def _output_shape(self, height: int, width: int, settings: dict) -> tuple[int, int]:
        if settings["do_resize"]:
            height, width = self._resized_size(height, width, settings["size"])
        if settings["do_center_crop"]:
            height, width = settings["crop_size"]["height"], settings["crop_size"]["width"]
        return height, width

    def _transform(self, batch: torch.Tensor, settings: dict, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H', W') float32 (into `out` if given): resize, centre crop, normalize."""
        images = batch.permute(0, 3, 1, 2)  # (B, C, H, W) with channels-last strides: the fast uint8 kernel
        if settings["do_resize"]:
            size = self._resized_size(images.shape[2], images.shape[3], settings["size"])
            if size != tuple(images.shape[2:]):
                images = self._resize(images, size, RESAMPLE_MODES[settings["resample"]])
        if settings["do_center_crop"]:
            images = _center_crop(images, settings["crop_size"]["height"], settings["crop_size"]["width"])
        scale = settings["rescale_factor"] if settings["do_rescale"] else 1.0
        mean = _three(settings["image_mean"], "image_mean") if settings["do_normalize"] else [0.0] * 3
        std = _three(settings["image_std"], "image_std") if settings["do_normalize"] else [1.0] * 3
        # (x * rescale - mean) / std == x * (rescale / std) - mean / std: one multiply and one subtract per value
        weight = torch.tensor([scale / s for s in std], dtype=torch.float32, device=images.device).view(3, 1, 1)
        bias = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32, device=images.device)
        if out is None:
            out = _empty((images.shape[0], 3, *images.shape[2:]), torch.float32, images.device)  # contiguous
        for source, target in zip(images, out, strict=True):  # image by image, so the three passes hit the cache
            target.copy_(source)  # uint8 channels-last -> float32 channels-first
            target.mul_(weight).sub_(bias.view(3, 1, 1))
        return out

    @staticmethod
    def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
        """Antialiased resize of uint8 (B, 3, H, W); CPU rounds and clamps in uint8 like PIL's resampler."""
        if images.device.type == "cpu":
            return F.interpolate(images, size=size, mode=mode, antialias=True, align_corners=False)
        # Accelerators have no uint8 antialiased kernel: resize in float and round/clamp back as PIL would.
        out = F.interpolate(images.float(), size=size, mode=mode, antialias=True, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """Share memory with `array` even when it is read-only (np.asarray of a PIL image is): nothing here writes to
    its input, so torch's warning about non-writable arrays does not apply."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialized CPU tensor backed by NumPy memory: NumPy asks the kernel for transparent huge pages on large
    arrays and torch's allocator does not, so first-touch page faults cost several times less (a 57 MB batch of
    pixel_values: ~5 ms instead of ~20 ms on the bench machine)."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty((), dtype=dtype).numpy().dtype))


def _center_crop(images: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    """Centre crop (B, C, H, W) with transformers' offsets; zero-pad first (centred, ceil) if the crop is larger."""
    height, width = images.shape[2], images.shape[3]
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        top_pad, left_pad = -(-pad_h // 2), -(-pad_w // 2)  # ceil, as transformers' center_crop
        images = F.pad(images, (left_pad, pad_w - left_pad, top_pad, pad_h - top_pad))
        height, width = images.shape[2], images.shape[3]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return images[:, :, top : top + crop_h, left : left + crop_w]
