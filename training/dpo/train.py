"""`framelm dpo`: preference-tune a FrameLM with TRL's DPOTrainer on image, video and text pairs.

    framelm dpo --model_name_or_path sft_out --dataset pairs.jsonl --output_dir dpo_out --beta 0.1
    framelm dpo --config dpo.yaml --use_peft true --lora_r 16          # LoRA; the reference is the adapter disabled
    framelm dpo --config dpo.yaml --accelerate_config zero3 --num_processes 8  # under accelerate launch

Options: ours (`DPOArguments`), the data options (`DataArguments`), every `DPOConfig`/`TrainingArguments` field
(`--beta`, `--loss_type`, `--precompute_ref_log_probs`, ...) and TRL's `ModelConfig` (`use_peft`, `lora_r`,
`load_in_4bit`, ...). Without PEFT the reference model is a frozen copy of the starting model.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Errors are `FrameLMError`s, printed as one line by `framelm` (cli.main, or `run_command` when launched)."""
    from framelm.training.launch import run_method

    return run_method(sys.argv[1:] if argv is None else argv, "framelm.training.dpo.train", parse_args, run)


def build_parser():
    """`TrlParser` over our options, the data options, `DPOConfig` and `ModelConfig`; errors are one line."""
    from trl import ModelConfig, TrlParser

    from framelm.training.data.arguments import DataArguments
    from framelm.training.dpo.arguments import DPOArguments, FrameLMDPOConfig
    from framelm.training.recipe import RecipeParser

    class DPOParser(RecipeParser, TrlParser):
        pass

    return DPOParser(
        (DPOArguments, DataArguments, FrameLMDPOConfig, ModelConfig),
        prog="framelm dpo",
        description="Preference-tune a FrameLM with TRL's DPOTrainer. `--config recipe.yaml` sets any option "
        "below; flags given here override it.",
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(DPOArguments, DataArguments, FrameLMDPOConfig, ModelConfig) from a recipe and flags. A user error exits with
    code 2 and one line saying what to fix."""
    from framelm.training.data.paths import require_local_or_hub
    from framelm.training.env import require_reporters

    parser = build_parser()
    try:
        script_args, data_args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as err:  # a value a dataclass refuses, or a recipe key that is no option
        parser.error(str(err))
    if not model_args.model_name_or_path:
        parser.error("say which model to tune: --model_name_or_path FOLDER_OR_HUB_ID (a FrameLM, e.g. an SFT run)")
    require_local_or_hub(model_args.model_name_or_path, "--model_name_or_path")  # never a Hub lookup for a typo
    if data_args.dataset is None:
        parser.error("say what to tune on: --dataset FILE_OR_MIXTURE_YAML of preference pairs")
    require_reporters(training_args.report_to)
    return script_args, data_args, training_args, model_args


def run(script_args, data_args, training_args, model_args, callbacks: list | None = None):
    """Load the model, prepare the pairs under the bad-record policy, train with DPO, save a Hub-ready folder."""
    from framelm.training.dpo.data_prep import prepare_pairs
    from framelm.training.dpo.trainer import FrameLMDPOTrainer
    from framelm.training.model.loading import load_model_and_processor, peft_config_for, set_stage
    from framelm.training.run_record import write_run_record

    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import_tower_classes(model_args)
    model, processor = load_model_and_processor(script_args, model_args)
    peft_config = peft_config_for(model_args, script_args.stage)
    # the reference: the adapter disabled under PEFT (TRL's way, no copy); else the starting model loaded once more
    # and frozen (TRL would rebuild it from the model's path, without the remote code a FrameLM needs; a fresh load,
    # not a deep copy, so that ZeRO-3 partitions it at load time like the policy)
    ref_model = None
    if peft_config is None:
        ref_model = load_model_and_processor(script_args, model_args)[0].eval().requires_grad_(False)
    set_stage(model, script_args.stage, use_peft=model_args.use_peft)
    with training_args.main_process_first(desc="data preparation"):  # other ranks then read the Arrow cache
        data = prepare_pairs(data_args, processor, training_args.max_length, script_args.eval_dataset,
                             training_args.pad_to_multiple_of)  # fmt: skip
    trainer = FrameLMDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=data.collator,
        processing_class=processor,
        peft_config=peft_config,
        skipped_records=data.skipped,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        dpo = {"beta": training_args.beta, "loss_type": list(training_args.loss_type),
               "precompute_ref_log_probs": training_args.precompute_ref_log_probs,
               "reference": "adapter disabled" if peft_config is not None else "frozen copy"}  # fmt: skip
        write_run_record(training_args.output_dir, script_args, data_args, training_args, model_args, trainer,
                         trainer.skipped_records, extra={"method": "dpo", "dpo": dpo})  # fmt: skip
        logger.info("saved a Hub-ready FrameLM to %s (%d pairs skipped before training, %d while training)",
                    training_args.output_dir, trainer.skipped_before_training,
                    trainer.skipped_in_training)  # fmt: skip
    return trainer


def import_tower_classes(model_args) -> None:
    """Import the vision tower's and the LM's modeling modules before any model is built.

    Under ZeRO-3, models are built inside DeepSpeed's `zero.Init`, which wraps the `__init__` of every module class
    and, on leaving, puts back the `__init__` it found; a class first imported inside it (transformers imports a
    model's modules lazily) thus loses what decorators added to its `__init__` after class creation (the `kernels`
    hub-kernel hooks of Llama's attention), and the second model built (the reference) fails in its first forward.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    from framelm.modeling import FrameLMConfig

    config = FrameLMConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    for sub in (config.vision_config, config.text_config):
        try:
            MODEL_MAPPING[type(AutoConfig.for_model(sub.model_type))]
        except (KeyError, ValueError):  # a tower transformers does not map: nothing to import ahead
            pass


if __name__ == "__main__":  # `accelerate launch -m framelm.training.dpo.train`: the same one-line errors
    from framelm.training.errors import run_command

    sys.exit(run_command("dpo", main, sys.argv[1:]))
