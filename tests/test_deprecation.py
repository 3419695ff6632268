"""Renamed names keep working, with a DeprecationWarning (symnas._deprecation)."""
import importlib
import pickle
import types

import pytest

import symnas as sn
from symnas._deprecation import renamed_names

RENAMED = [("symnas.program", "Dense", "Linear"),
           ("symnas.program.operators", "Dense", "Linear"),
           ("symnas.program.torch_module", "TransformedConv", "TorchKernelModule"),
           ("symnas.train", "Schedule", "LRSchedule"),
           ("symnas.train", "Step", "StepDecay"),
           ("symnas.train.schedules", "Schedule", "LRSchedule"),
           ("symnas.train.schedules", "Step", "StepDecay")]


@pytest.mark.parametrize("module_name, old, new", RENAMED)
def test_an_old_name_resolves_to_the_new_object_with_a_deprecation_warning(module_name, old, new):
    module = importlib.import_module(module_name)
    with pytest.warns(DeprecationWarning, match=rf"{module_name}\.{old} is renamed {module_name}\.{new}"):
        assert getattr(module, old) is getattr(module, new)


def test_from_import_of_an_old_name_warns_and_gives_the_new_class():
    with pytest.warns(DeprecationWarning, match="renamed"):
        from symnas.train import Step  # pylint: disable=import-outside-toplevel
    assert Step is sn.train.StepDecay


def test_an_unknown_name_is_still_an_attribute_error_naming_module_and_name():
    with pytest.raises(AttributeError, match="module 'symnas.program.operators' has no attribute 'Nope'"):
        sn.program.operators.Nope  # pylint: disable=pointless-statement


def test_json_files_written_before_the_renames_still_load():
    assert sn.from_json('{"_type": "symnas.program.operators.Dense", "c_in": 4, "c_out": 2}') == \
        sn.program.Linear(4, 2)
    assert sn.from_json('{"_type": "symnas.train.schedules.Step", "every": 2}') == sn.train.StepDecay(every=2)


def test_a_pickle_naming_the_old_class_unpickles_to_the_new_one():
    # what torch.save wrote before TransformedConv became TorchKernelModule: a global by its old name
    payload = b"\x80\x04csymnas.program.torch_module\nTransformedConv\n."   # GLOBAL by the old name
    with pytest.warns(DeprecationWarning):
        assert pickle.loads(payload) is sn.program.torch_module.TorchKernelModule


def test_the_helper_serves_any_module_namespace():
    module = types.ModuleType("mod")
    module.New = object()
    module.__getattr__ = renamed_names("mod", vars(module), {"Old": "New"})
    with pytest.warns(DeprecationWarning, match="mod.Old is renamed mod.New"):
        assert module.Old is module.New
    with pytest.raises(AttributeError, match="'mod' has no attribute 'Other'"):
        module.Other  # pylint: disable=pointless-statement
