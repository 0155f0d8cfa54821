"""The training options are declared once: the CLI flags and the checks derive from the fields."""

import argparse
from dataclasses import dataclass, fields

import pytest

from scratchseg.cli import build_parser
from scratchseg.training.options import (
    RESUMABLE_OPTIONS,
    TrainOptions,
    add_option_flags,
    flag_name,
    given_options,
    number,
    one_of,
    option,
    resumed_options,
)

# the train subcommand's flags that are not training options
RUN_FLAGS = {"--help", "-h", "--out", "--resume", "--quiet", "--distributed"}


def _subparser(parser, name):
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


def _flags(parser):
    return {s for a in parser._actions for s in a.option_strings if not s.startswith("--no-")}


def test_train_flags_are_exactly_the_option_fields():
    train = _subparser(build_parser(), "train")
    assert _flags(train) - RUN_FLAGS == {flag_name(f.name) for f in fields(TrainOptions)}


def test_every_field_declares_help_and_rule():
    for f in fields(TrainOptions):
        assert f.metadata["help"] and callable(f.metadata["rule"]), f.name
        assert f.metadata["rule"](f.default), f"{f.name}'s default breaks its own rule"
    TrainOptions().validate()


def test_resumable_options_come_from_the_fields():
    assert RESUMABLE_OPTIONS == ("epochs", "val_every", "backend", "trace")


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0)" in out  # --epochs
    assert "(default: auto)" in out and "(default: none)" in out  # --mask-suffix
    assert "base learning rate (default: 0.05)" in out
    assert "(default: cosine)" in out and "--no-augment" in out


def test_auto_normalisation_is_percentile_for_folders_and_none_for_the_synthetic_data():
    assert TrainOptions().normalization() == "none"
    assert TrainOptions(data="cells").normalization() == "percentile"
    assert TrainOptions(data="cells", normalize="minmax").normalization() == "minmax"
    assert TrainOptions(data="cells").folder_settings()["normalize"] == "percentile"


def test_flags_take_the_defaults_type_and_the_rules_choices():
    train = _subparser(build_parser(), "train")
    args = train.parse_args(["--epochs", "3", "--lr", "0.5", "--no-augment",
                             "--schedule", "step", "--data", "d"])
    given = given_options(args, TrainOptions)
    assert given == dict(epochs=3, lr=0.5, augment=False, schedule="step", data="d")
    assert type(given["epochs"]) is int and type(given["lr"]) is float
    with pytest.raises(SystemExit):
        train.parse_args(["--schedule", "linear"])


def test_nothing_given_is_nothing_in_given_options():
    args = _subparser(build_parser(), "train").parse_args([])
    assert given_options(args, TrainOptions) == {}


@dataclass
class MoreOptions(TrainOptions):
    """A new option is one field: a flag and its check follow, cli.py untouched."""

    label_smoothing: float = option(0.0, "mix the one-hot targets with uniform", number(0, 1))
    sampler: str = option("uniform", "how tiles are drawn", one_of(("uniform", "balanced")))


def test_a_new_field_gets_a_flag_and_validation():
    parser = argparse.ArgumentParser()
    names = add_option_flags(parser, MoreOptions)
    assert names[-2:] == ["label_smoothing", "sampler"]
    args = parser.parse_args(["--label-smoothing", "1.5", "--sampler", "balanced"])
    options = MoreOptions(**given_options(args, MoreOptions))
    assert options.sampler == "balanced"
    with pytest.raises(ValueError, match=r"^--label-smoothing must be in \[0, 1\), got 1\.5$"):
        options.validate()
    with pytest.raises(SystemExit):
        parser.parse_args(["--sampler", "greedy"])
    assert "mix the one-hot targets with uniform (default: 0.0)" in parser.format_help()


@pytest.mark.parametrize("change, message", [
    (dict(lr=-0.1), "--lr must be a number >= 0, got -0.1"),
    (dict(epochs=-1), "--epochs must be an integer >= 0, got -1"),
    (dict(epochs=True), "--epochs must be an integer >= 0, got True"),
    (dict(class_weights="1,-2"), "--class-weights must be none, balanced or w0,w1,..., "
                                 "got '1,-2'"),
    (dict(class_weights="0,0"), "--class-weights must be none, balanced or w0,w1,..., "
                                "got '0,0'"),
    (dict(momentum=1.0), "--momentum must be in [0, 1), got 1.0"),
    (dict(weight_decay=float("nan")), "--weight-decay must be a number >= 0, got nan"),
    (dict(padding="full"), "--padding must be one of valid, same, got 'full'"),
    (dict(augment="yes"), "--augment must be true or false, got 'yes'"),
    (dict(data=""), "--data must be 'synthetic' or a folder, got ''"),
])
def test_validation_names_the_flag(change, message):
    with pytest.raises(ValueError) as error:
        TrainOptions(**change).validate()
    assert str(error.value) == message


def test_resumed_options_change_only_the_resumable_ones():
    stored = dict(vars(TrainOptions(epochs=1)), retired_option=3)  # unknown keys are dropped
    options = resumed_options(stored, dict(epochs=4, depth=3), "run")
    assert options == TrainOptions(epochs=4)
    with pytest.raises(ValueError, match=r"cannot change --depth \(the run has 3, got 2\); only "
                                         r"--epochs, --val-every, --backend, --trace may change"):
        resumed_options(stored, dict(depth=2), "run")
    with pytest.raises(ValueError, match="--epochs must be an integer >= 0, got -1"):
        resumed_options(stored, dict(epochs=-1), "run")
