"""`framelm train`: fine-tune a FrameLM with TRL's SFTTrainer, from a YAML recipe plus command-line overrides.

    framelm train --config recipe.yaml                                     # one CPU or one GPU
    framelm train --config recipe.yaml --learning_rate 1e-5 --stage all    # any option of the recipe, overridden
    framelm train --config recipe.yaml --accelerate_config zero3 --num_processes 8  # under accelerate launch
    accelerate launch --config_file my_accelerate.yaml -m framelm.training.sft.train --config recipe.yaml  # the same

Options: ours (`FrameLMArguments`), the data options (`DataArguments`), every `SFTConfig`/`TrainingArguments` field,
and TRL's `ModelConfig` (`model_name_or_path`, `use_peft`, `lora_r`, ...). Scale-out is accelerate's job: this script
holds no distributed code and runs unchanged on one CPU, DDP, FSDP or DeepSpeed.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from framelm.training.env import usable_cores

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Errors are `FrameLMError`s, printed as one line by `framelm` (cli.main, or `run_command` when launched)."""
    from framelm.training.launch import run_method

    return run_method(sys.argv[1:] if argv is None else argv, "framelm.training.sft.train", parse_args, run)


def build_parser():
    """`TrlParser` over our options, the data options, `SFTConfig` and `ModelConfig`; errors are one line."""
    from trl import ModelConfig, TrlParser

    from framelm.training.data.arguments import DataArguments
    from framelm.training.recipe import RecipeParser
    from framelm.training.sft.arguments import FrameLMArguments, FrameLMSFTConfig

    class TrainParser(RecipeParser, TrlParser):
        pass

    return TrainParser(
        (FrameLMArguments, DataArguments, FrameLMSFTConfig, ModelConfig),
        prog="framelm train",
        description="Fine-tune a FrameLM with TRL's SFTTrainer. `--config recipe.yaml` sets any option below; "
        "flags given here override it.",
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(FrameLMArguments, DataArguments, FrameLMSFTConfig, ModelConfig) from a recipe and flags. A user error (an
    unknown option, a bad value, no model or no data) exits with code 2 and one line saying what to fix."""
    import warnings

    from framelm.training.data.paths import require_local_or_hub
    from framelm.training.env import require_reporters

    parser = build_parser()
    try:
        with warnings.catch_warnings():  # TRL's own default, not the user's choice: nothing they can act on
            warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
            script_args, data_args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as err:  # a value a dataclass refuses, or a recipe key that is no option
        parser.error(str(err))
    if not (model_args.model_name_or_path or script_args.init_from):
        parser.error("say which model to train: --model_name_or_path FOLDER_OR_HUB_ID, or --init_from ...")
    if model_args.model_name_or_path and not script_args.init_from:  # a mistyped folder is never looked up on the Hub
        require_local_or_hub(model_args.model_name_or_path, "--model_name_or_path")
    for name in script_args.init_from or []:
        if name != "tiny":
            require_local_or_hub(name, "--init_from")
    if data_args.dataset is None:
        parser.error("say what to train on: --dataset FILE_OR_MIXTURE_YAML (or a dataset folder, Hub id or shards)")
    require_reporters(training_args.report_to)
    return script_args, data_args, training_args, model_args


def run(script_args, data_args, training_args, model_args, callbacks: list | None = None):
    """Build or load the model, prepare the data under the bad-record policy, train, save a Hub-ready folder.

    `callbacks`: extra `transformers.TrainerCallback`s, for programmatic use (early stopping, custom logging)."""
    from framelm.training.batches.layout import BatchLayout
    from framelm.training.batches.varlen_attention import attend_sample_by_sample
    from framelm.training.model.loading import load_model_and_processor, peft_config_for, set_stage
    from framelm.training.run_record import run_record, write_run_record
    from framelm.training.sft.data_prep import configure_for_stream, prepare_datasets
    from framelm.training.sft.trainer import FrameLMTrainer

    logging.basicConfig(
        level=process_log_level(training_args), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    share_cores_with_workers(training_args.dataloader_num_workers)
    model, processor = load_model_and_processor(script_args, model_args)
    set_stage(model, script_args.stage, use_peft=model_args.use_peft)
    layout = BatchLayout.from_args(training_args)  # packing, padding_free, pad_to_multiple_of
    if layout.packs:
        attend_sample_by_sample(model)
    with prepared_once(training_args):  # other ranks then read the Arrow cache
        data = prepare_datasets(data_args, processor, training_args.max_length, script_args.eval_dataset, layout)
    if data.streamed:
        configure_for_stream(training_args, data.records)
    trainer = FrameLMTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=data.collator,
        processing_class=processor,
        peft_config=peft_config_for(model_args, script_args.stage),
        skipped_records=data.skipped,
        max_bad_fraction=data_args.max_bad_fraction,
        records=None if data.streamed else len(data.train),
        source=data_args.dataset,
        callbacks=callbacks,
    )
    trainer.card_facts = lambda: run_record(script_args, data_args, training_args, model_args, trainer,
                                            trainer.skipped_records)  # fmt: skip
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        write_run_record(training_args.output_dir, script_args, data_args, training_args, model_args, trainer,
                         trainer.skipped_records)  # fmt: skip
        trainer.save_state()  # trainer_state.json (the log history): `framelm plot RUN_DIR` reads it
        trainer.create_model_card()  # framelm's card, as `framelm export` writes it (without evaluation)
        if script_args.plot_loss:
            from framelm.training.sft.plot import plot_loss

            written = plot_loss(trainer.state.log_history, training_args.output_dir)
            for path in written:
                logger.info("loss curve: %s", path)
            if not written:
                logger.warning("--plot_loss: no loss was logged (--logging_steps %s), so no curve was drawn",
                               training_args.logging_steps)  # fmt: skip
        logger.info("saved a Hub-ready FrameLM to %s (%d records skipped before training, %d while training: media "
                    "that failed to decode, each named in a warning above)", training_args.output_dir,
                    trainer.skipped_before_training, trainer.skipped_in_training)  # fmt: skip
    return trainer


def process_log_level(training_args) -> int:
    """INFO (or `--log_level`) on the main process, `--log_level_replica` (default: warning) on the others."""
    if training_args.should_log and training_args.log_level == "passive":
        return logging.INFO
    return training_args.get_process_log_level()


@contextmanager
def prepared_once(training_args):
    """Data preparation on the main process first; the others then find its work in the `datasets` cache, and log
    only errors: the main process has already reported every skipped record once."""
    with training_args.main_process_first(desc="data preparation"):
        if not training_args.should_log:
            logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def share_cores_with_workers(num_workers: int) -> None:
    """On CPU, leave the DataLoader workers (which decode the media) cores of their own.

    torch's intra-op threads spin while they wait for each other; sharing cores with busy workers, a training step
    becomes many times slower. An explicit `OMP_NUM_THREADS` is left alone, as are GPU runs.
    """
    import torch

    if num_workers == 0 or torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return
    cores = usable_cores()
    threads = max(1, cores - num_workers)
    if threads < torch.get_num_threads():
        logger.info("CPU training: %d torch thread(s), the other cores to %d DataLoader workers", threads, num_workers)
        torch.set_num_threads(threads)


if __name__ == "__main__":  # `accelerate launch -m framelm.training.sft.train`: the same one-line errors
    from framelm.training.errors import run_command

    sys.exit(run_command("train", main, sys.argv[1:]))
