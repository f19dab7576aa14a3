"""Test config for launch.sweep: the smoke moving_digits config with an example get_hyper.

Shows the sweep helpers: a zip of two keys (runs move together), crossed with a width sweep, plus a
key fixed for every run: 2 x 2 = 4 runs. With the argument ``two`` (``sweep_example_config.py:two``)
the sweep is just two short learning rates (what the end-to-end local sweep test trains).
"""

from configs import moving_digits


def get_config(arg: str | None = None):
    del arg  # "two" only changes the sweep
    return moving_digits.get_config("smoke")


def get_hyper(h, arg=None):
    if arg == "two":
        return h.product([
            h.sweep("config.optimizer.learning_rate", [1e-3, 3e-3]),
            h.fixed("config.training.num_train_steps", 2),
        ])
    return h.product([
        h.zip([
            h.sweep("config.optimizer.learning_rate", [1e-4, 3e-4]),
            h.sweep("config.optimizer.warmup_steps", [1, 2]),
        ]),
        h.sweep("config.model.base_channels", [8, 16]),
        h.fixed("config.training.num_train_steps", 2),
    ])
