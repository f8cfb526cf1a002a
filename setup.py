"""Package layout only (everything else is in pyproject.toml): the subpackages of `framelm` live at the top of the
repository (modeling/, processing/, training/, hub_cards/), so they are found there and renamed `framelm.*`."""

from setuptools import find_packages, setup

TOP_LEVEL = ("modeling", "processing", "training", "hub_cards")
packages = find_packages(include=[f"{name}*" for name in TOP_LEVEL])
setup(
    packages=[f"framelm.{package}" for package in packages],
    package_dir={f"framelm.{name}": name for name in TOP_LEVEL},
)
