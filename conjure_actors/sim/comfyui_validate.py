"""Prompt validation for the ComfyUI simulator, reproducing ``execution.validate_prompt``.

The answers have the real shapes (``captures/prompt_400_bodies.json``): an ``error`` object
plus ``node_errors`` keyed by the node that has reasons, each with ``errors``,
``dependent_outputs`` and ``class_type``. The quirks are kept on purpose:

- ``error.details`` only lists problems of the *output node itself*;
- a link to a missing node raises a ``KeyError`` inside the linked node's validation, which
  the *caller* catches, so the error is filed under the linked node with the caller's input
  name (``exception_during_inner_validation``);
- the ``dependent_outputs`` of a failing node collects every output validated after it
  failed, because the real loop walks the shared ``validated`` map;
- values are coerced in place (``int()``, ``float()``, ``str()``, ``bool()``) before the range
  and combo checks, and the coerced values are what the queue and history then show;
- combo lists longer than 20 are not echoed back (``input_config`` is null);
- a dependency cycle makes the real (unguarded, recursive) validator overflow the stack;
  the ``RecursionError`` is filed under a node of the cycle, then overwritten while the
  recursion unwinds, so the answer is a 400 with empty ``node_errors`` (same here);
- nodes with their own ``VALIDATE_INPUTS`` (here only ``LoadImage``) skip the combo check and
  answer ``custom_validation_failed``;
- V3 nodes declare combos as ``["COMBO", {"options": [...]}]``: checked like V1 lists.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["ValidationOutcome", "is_link", "validate_prompt"]

_JSON = dict[str, Any]

_FAKE_TB: Final = [
    '  File "/srv/comfyui/execution.py", line 808, in validate_inputs\n'
    "    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n",
    '  File "/srv/comfyui/execution.py", line 788, in validate_inputs\n'
    "    o_class_type = prompt[o_id]['class_type']\n",
]


def is_link(value: object) -> bool:
    """ComfyUI reads any 2-element list as a link ``[node_id, output_index]``."""
    return isinstance(value, list) and len(value) == 2


class ValidationOutcome:
    """What ``validate_prompt`` returns: ok, the error object, good outputs, node_errors."""

    __slots__ = ("error", "good_outputs", "node_errors", "ok")

    def __init__(
        self, ok: bool, error: _JSON | None, good_outputs: list[str], node_errors: _JSON
    ) -> None:
        self.ok = ok
        self.error = error
        self.good_outputs = good_outputs
        self.node_errors = node_errors


def _error(kind: str, message: str, details: str) -> _JSON:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _types_match(received: object, expected: object) -> bool:
    if isinstance(expected, list):  # a combo fed by a link
        return received in ("COMBO", "STRING", "*")
    if received == "*" or expected == "*":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool(set(received.split(",")) & set(expected.split(",")))


def _combo_options(input_type: object, extra: _JSON) -> list[Any] | None:
    """A combo's choices: the type itself (V1 nodes) or ``options`` of a V3 ``COMBO``."""
    if isinstance(input_type, list):
        return input_type
    if input_type == "COMBO":
        options = extra.get("options", [])
        return list(options) if isinstance(options, list) else []
    return None


def _in_combo(val: object, options: list[Any], extra: _JSON) -> bool:
    if extra.get("multiselect") and isinstance(val, list):
        return all(v in options for v in val)
    try:
        return val in options
    except TypeError:  # an unhashable value compared with strings: not in the list
        return False


class _Validator:
    def __init__(
        self,
        prompt: _JSON,
        catalog: Mapping[str, _JSON],
        custom: Mapping[str, Callable[[str, object], str | bool]],
    ) -> None:
        self.prompt = prompt
        self.catalog = catalog
        self.custom = custom
        self.validated: dict[str, tuple[bool, list[_JSON], str]] = {}
        self.visiting: set[str] = set()

    def inputs_of(self, class_type: str) -> list[tuple[str, str, Any, _JSON]]:
        spec = self.catalog[class_type]["input"]
        out = []
        for category in ("required", "optional"):
            for name, conf in spec.get(category, {}).items():
                extra = conf[1] if len(conf) > 1 and isinstance(conf[1], dict) else {}
                out.append((name, category, conf[0], extra))
        return out

    def validate(self, unique_id: str) -> tuple[bool, list[_JSON], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self.visiting:
            # The real validator recurses without a guard: a cycle ends in RecursionError,
            # caught (and filed) by the node that linked into it.
            raise RecursionError("maximum recursion depth exceeded")
        self.visiting.add(unique_id)
        try:
            return self._validate(unique_id)
        finally:
            self.visiting.discard(unique_id)

    def _validate(self, unique_id: str) -> tuple[bool, list[_JSON], str]:
        node = self.prompt[unique_id]
        inputs = node.setdefault("inputs", {})
        class_type = node["class_type"]
        custom = self.custom.get(class_type)
        errors: list[_JSON] = []
        valid = True
        for name, category, input_type, extra in self.inputs_of(class_type):
            info = [input_type, extra]
            if name not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
                continue
            val = inputs[name]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of "
                            "[node_id, slot_index]",
                            "details": name,
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                o_id = val[0]
                # A missing node raises KeyError here, caught by whoever validates us.
                o_class = self.prompt[o_id]["class_type"]
                returns = self.catalog[o_class]["output"]
                received_type = returns[val[1]]
                if not _types_match(received_type, input_type):
                    details = (
                        f"{name}, received_type({received_type}) mismatch input_type({input_type})"
                    )
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": details,
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    inner = self.validate(str(o_id))
                except (KeyError, IndexError, TypeError, RecursionError) as exc:
                    valid = False
                    self.validated[str(o_id)] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(exc),
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "exception_message": str(exc),
                                    "exception_type": type(exc).__name__,
                                    "traceback": list(_FAKE_TB),
                                    "linked_node": val,
                                },
                            }
                        ],
                        str(o_id),
                    )
                    continue
                if inner[0] is False:
                    valid = False
                continue
            if isinstance(val, dict) and "__value__" in val:
                val = val["__value__"]
                inputs[name] = val
            received = val
            try:
                if input_type == "INT":
                    val = int(val)
                elif input_type == "FLOAT":
                    val = float(val)
                elif input_type == "STRING":
                    val = str(val)
                elif input_type == "BOOLEAN":
                    val = bool(val)
                inputs[name] = val
            except (TypeError, ValueError, OverflowError) as exc:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{name}, {received}, {exc}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": received,
                            "exception_message": str(exc),
                        },
                    }
                )
                continue
            if custom is not None:
                continue  # VALIDATE_INPUTS replaces the range and combo checks
            if "min" in extra and val < extra["min"]:
                errors.append(
                    {
                        "type": "value_smaller_than_min",
                        "message": f"Value {val} smaller than min of {extra['min']}",
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                        },
                    }
                )
                continue
            if "max" in extra and val > extra["max"]:
                errors.append(
                    {
                        "type": "value_bigger_than_max",
                        "message": f"Value {val} bigger than max of {extra['max']}",
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                        },
                    }
                )
                continue
            options = _combo_options(input_type, extra)
            if options is not None and not _in_combo(val, options, extra):
                config: list[Any] | None = info
                if len(options) > 20:
                    list_info = f"(list of length {len(options)})"
                    config = None
                else:
                    list_info = str(options)
                errors.append(
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: '{val}' not in {list_info}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": config,
                            "received_value": val,
                        },
                    }
                )
                continue
        if custom is not None:
            for name, _category, _type, _extra in self.inputs_of(class_type):
                if name not in inputs or is_link(inputs[name]):
                    continue
                answer = custom(name, inputs[name])
                if answer is not True:
                    details = name if answer is False else f"{name} - {answer}"
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": details,
                            "extra_info": {"input_name": name},
                        }
                    )
        result = (not errors and valid, errors, unique_id)
        self.validated[unique_id] = result
        return result


def validate_prompt(
    prompt: _JSON,
    *,
    catalog: Mapping[str, _JSON],
    output_classes: frozenset[str],
    custom: Mapping[str, Callable[[str, object], str | bool]],
    partial_targets: list[str] | None = None,
) -> ValidationOutcome:
    """Validate an API-format ``prompt`` (mutating it: coerced values are stored back).

    Raises ``AttributeError``/``TypeError`` for a prompt that is not an object, as the real
    server does (it answers those with a 500).
    """
    if not isinstance(prompt, dict):
        raise TypeError("prompt is not an object")  # the real server answers 500
    for node_id in prompt:
        node = prompt[node_id]
        # ``'class_type' not in prompt[x]`` as Python evaluates it: a number (a UI-format
        # graph's "version", "last_node_id"...) raises TypeError, which the server answers
        # with a 500; a string or a list is searched and usually lacks it (400).
        if not isinstance(node, (dict, str, list)):
            raise TypeError(f"argument of type '{type(node).__name__}' is not iterable")
        if "class_type" not in node:
            return ValidationOutcome(
                False,
                _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                ),
                [],
                {},
            )
        if not isinstance(node, dict):
            raise TypeError("string indices must be integers")  # node["class_type"]
        class_type = node["class_type"]
        if isinstance(class_type, (list, dict)):
            raise TypeError(f"unhashable type: '{type(class_type).__name__}'")
        if not isinstance(class_type, str) or class_type not in catalog:
            return ValidationOutcome(
                False,
                _error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                ),
                [],
                {},
            )
    # The real server iterates a set here (hash order); reverse prompt order reproduces the
    # captures (``history_loadimage_run.json`` lists outputs ["16", "13"]).
    outputs = [
        node_id
        for node_id, node in reversed(prompt.items())
        if node["class_type"] in output_classes
        and (partial_targets is None or node_id in partial_targets)
    ]
    if not outputs:
        return ValidationOutcome(
            False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
        )
    validator = _Validator(prompt, catalog, custom)
    good: list[str] = []
    errors: list[tuple[str, list[_JSON]]] = []
    node_errors: _JSON = {}
    for out in outputs:
        try:
            ok, reasons, _ = validator.validate(out)
        except (KeyError, IndexError, TypeError, RecursionError) as exc:
            ok = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(exc),
                    "extra_info": {
                        "exception_type": type(exc).__name__,
                        "traceback": traceback.format_exception_only(exc),
                    },
                }
            ]
            validator.validated[out] = (False, reasons, out)
        if ok:
            good.append(out)
            continue
        if reasons:
            errors.append((out, reasons))
        for node_id, (node_ok, node_reasons, _) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            if node_id not in node_errors:
                node_errors[node_id] = {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                }
            node_errors[node_id]["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(
            f"{e['message']}: {e['details']}" for _, reasons in errors for e in reasons
        )
        return ValidationOutcome(
            False,
            _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            [],
            node_errors,
        )
    return ValidationOutcome(True, None, good, node_errors)
