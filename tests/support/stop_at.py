"""A training callback that stops a run as a killed job would, for resume tests."""

from transformers import TrainerCallback


class StopAt(TrainerCallback):
    """Stops a run after `step` optimizer steps, as a killed job would (its last checkpoint is at that step)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
