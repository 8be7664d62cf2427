"""Configuration: defaults < TOML file < environment < command-line flags.

The whole configuration is one tree of frozen attrs classes (:class:`Config`). Each source is
turned into a nested dict of overrides, the dicts are merged in precedence order, and one
private cattrs ``Converter`` structures the result (extra keys forbidden), so a bad key or a
bad value anywhere is caught in one place and reported as a one-line :class:`ConfigError`
naming the key (``pool.max_machines: expected an integer, got 'many'``).

The RunComfy API token is held in :class:`Secret`, whose ``repr``/``str`` never show it; call
:meth:`Secret.reveal` at the one place that builds the ``Authorization`` header.

Environment variables: ``RUNCOMFY_USER_ID``, ``RUNCOMFY_API_TOKEN``,
``RUNCOMFY_API_BASE_URL`` and every ``CONJURE_<SECTION>_<KEY>`` (for example
``CONJURE_POOL_MAX_MACHINES=3``, ``CONJURE_BUDGET_USD=2.5``). The TOML file is
``--config PATH`` or ``./conjure.toml`` when it exists.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from conjure_actors.domain.machines_policy import launch_duration
from conjure_actors.domain.prices import MAX_BUDGET_USD
from conjure_actors.errors import ConfigError

DEFAULT_CONFIG_FILE: Final = "conjure.toml"
DEFAULT_RUNCOMFY_BASE_URL: Final = "https://api.runcomfy.net"
SERVER_TYPES: Final = ("medium", "large", "extra-large", "2x-large", "2xl-turbo")


@attrs.frozen(repr=False)
class Secret:
    """A secret string (API token): never shown by ``repr``, ``str`` or f-strings."""

    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


# Validators name their field in the message ("max_machines: must be > 0, got 0"); the
# error formatter below joins it to the section's path.
def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _finite(attribute, value)
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be > 0, got {value!r}")


def _finite(attribute: attrs.Attribute[Any], value: float) -> None:
    # NaN passes every comparison's "else" (`nan <= 0` is False) and infinity every lower
    # bound; either would crash an actor later (a deadline, a lease's cost in integer
    # micros), far from the setting: refuse them here, naming it.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{attribute.name}: must be a finite number, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _finite(attribute, value)
    if value < 0:
        raise ValueError(f"{attribute.name}: must be >= 0, got {value!r}")


def _at_most(limit: float, what: str = "") -> Any:
    """A cap on a setting (beyond it, a typo whose result would not fit an event's integer
    or a deadline); ``what`` says the limit in words."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if value > limit:
            said = f" ({what})" if what else ""
            raise ValueError(f"{attribute.name}: must be at most {limit:g}{said}, got {value!r}")

    return check


MAX_LEASE_SECONDS: Final = 86400.0
"""The longest lease (``pool.lease_seconds``): a day, renewed while work remains."""
MAX_SECONDS: Final = 30 * 86400.0
"""The longest of every other duration setting (30 days)."""

_SECONDS: Final = (_at_most(MAX_SECONDS, "30 days"),)


def _seconds(positive: bool = True) -> list[Any]:
    """A duration setting's validators: finite, > 0 (or >= 0), at most :data:`MAX_SECONDS`."""
    return [_positive if positive else _non_negative, *_SECONDS]


MAX_RETRY_FACTOR: Final = 10.0
MAX_RETRY_ATTEMPTS: Final = 100
"""Caps on the retry schedule (``initial * factor ** (attempt - 1)`` must stay a float)."""
MAX_PRELAUNCH_FACTOR: Final = 100.0

# (A bad value is said with where it came from, the file or the environment variable:
# load_config's _named_by_source.)


def _header_safe(attribute: attrs.Attribute[Any], value: str) -> None:
    """A credential goes into every request's headers (or path): printable ASCII without
    whitespace. A pasted token often ends in a newline; never echo the value (a token)."""
    if value and not all("!" <= c <= "~" for c in value):
        raise ValueError(
            f"{attribute.name}: holds whitespace or a character that is not printable ASCII"
            " (a pasted newline?): set it to the value alone"
        )


def _http_url(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    """An API's base URL: ``http://`` or ``https://`` and a host (never echoed: it may
    carry credentials)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number in 0-65535 raises ValueError
    except ValueError:  # a bad port or IPv6 literal
        ok = False
    if not ok or any(c.isspace() for c in value):
        raise ValueError(
            f"{attribute.name}: not an http:// or https:// URL with a host: give one"
            " like https://api.runcomfy.net or http://127.0.0.1:8300"
        )


def comfyui_url_problem(url: str) -> str | None:
    """What is wrong with a ComfyUI URL (``--comfyui-url``, ``comfyui_url``), None if
    nothing: it must be an http(s) URL with a host. The words show no path, query or
    credentials of it: they may hold a token."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        return "the port is not a number from 0 to 65535 (e.g. http://127.0.0.1:8188)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL with a host (e.g. http://127.0.0.1:8188)"
    if parts.query or parts.fragment:  # not shown: a token in a URL is a secret
        return (
            "a query or fragment (after ? or #) is not supported and is not shown here (it"
            " may hold a token): pass the ComfyUI's base URL, with the path a reverse proxy"
            " serves it under if any (e.g. https://host/comfy)"
        )
    return None


def _comfyui_url(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    """A bad ``comfyui_url`` is said by where it came from (the file, the environment
    variable; ``--comfyui-url`` by its flag: commands/cloud_args.py), as every setting is."""
    problem = comfyui_url_problem(value) if value else None
    if problem is not None:
        raise ValueError(f"{attribute.name}: {problem}")


def _one_of(*choices: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise ValueError(
                f"{attribute.name}: must be one of {', '.join(choices)}, got {value!r}"
            )

    return check


@attrs.frozen
class RunComfyConfig:
    """The RunComfy account and what to launch on it."""

    user_id: str = attrs.field(default="", validator=lambda i, a, v: _header_safe(a, v))
    api_token: Secret = attrs.field(
        default=Secret(""), validator=lambda i, a, v: _header_safe(a, v.reveal())
    )
    base_url: str = attrs.field(default=DEFAULT_RUNCOMFY_BASE_URL, validator=_http_url)
    server_type: str = attrs.field(default="medium")
    workflow_version: str = ""
    plan: str = attrs.field(default="hobby", validator=_one_of("hobby", "pro"))

    @server_type.validator
    def _check_server_type(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if not value or any(c.isspace() for c in value):
            raise ValueError(
                f"{attribute.name}: not a server type: {value!r} (e.g. {', '.join(SERVER_TYPES)})"
            )

    @property
    def configured(self) -> bool:
        """True when both the user id and the token are set (RunComfy mode)."""
        return bool(self.user_id) and bool(self.api_token)


@attrs.frozen
class PoolConfig:
    """The machine pool's policy (MachineActor)."""

    max_machines: int = attrs.field(default=5, validator=_positive)
    jobs_per_machine: int = attrs.field(default=1, validator=_positive)
    # The RunComfy "estimated_duration" of a launch: the lease. Renewed while work remains.
    lease_seconds: float = attrs.field(
        default=600.0, validator=[_positive, _at_most(MAX_LEASE_SECONDS, "a day")]
    )
    # Renew when less than this remains on the lease.
    renew_margin: float = attrs.field(
        default=180.0, validator=[_non_negative, _at_most(MAX_LEASE_SECONDS, "a day")]
    )
    idle_timeout: float = attrs.field(default=120.0, validator=_seconds(positive=False))
    # Idle machines kept past idle_timeout (ready for the next job at once, billed meanwhile).
    warm_pool: int = attrs.field(default=0, validator=_non_negative)
    # Machines launched per machine a waiting job needs: the first Ready takes the job, the
    # others are stopped while Starting (not billed), so a slow start-up rarely delays it.
    launch_hedge: int = attrs.field(default=1, validator=_positive)
    # Predictive pre-launch (off while prelaunch_max is 0): as jobs arrive, keep
    # ceil(rate x prelaunch_service x prelaunch_factor) machines Ready or Starting (at most
    # prelaunch_max), the rate being the jobs that arrived over the last prelaunch_window
    # seconds; each launch asks the budget, and a machine nobody takes stops by idle_timeout.
    prelaunch_max: int = attrs.field(default=0, validator=_non_negative)
    prelaunch_window: float = attrs.field(default=1800.0, validator=_seconds())
    prelaunch_service: float = attrs.field(default=600.0, validator=_seconds())
    prelaunch_factor: float = attrs.field(
        default=1.0, validator=[_positive, _at_most(MAX_PRELAUNCH_FACTOR)]
    )
    ready_timeout: float = attrs.field(default=600.0, validator=_seconds())
    poll_interval: float = attrs.field(default=5.0, validator=_seconds())
    # How long start-up and recovery wait out a rate-limited or unreachable RunComfy (they
    # must list the account's machines before anything else) before giving up.
    cloud_patience: float = attrs.field(default=600.0, validator=_seconds(positive=False))
    # Launches in a row that may end without a Ready machine (refused, or stuck Starting
    # past ready_timeout) before the waiting jobs fail instead of launching again; and, per
    # workflow version, machines Ready whose ComfyUI never answered (stopped unhealthy
    # before serving), after which that version is not launched for UNANSWERED_HOLD.
    max_launch_attempts: int = attrs.field(default=3, validator=_positive)
    # How long a stop (DELETE) keeps trying through rate limits and outages (never past the
    # machine's lease, when RunComfy stops it by itself); shutdown waits this long at most.
    stop_patience: float = attrs.field(default=600.0, validator=_seconds())


@attrs.frozen
class RetryConfig:
    """A job's retry policy (WorkflowActor)."""

    initial: float = attrs.field(default=2.0, validator=_seconds(positive=False))
    factor: float = attrs.field(default=2.0, validator=[_positive, _at_most(MAX_RETRY_FACTOR)])
    max_delay: float = attrs.field(default=60.0, validator=_seconds(positive=False))
    max_attempts: int = attrs.field(default=3, validator=[_positive, _at_most(MAX_RETRY_ATTEMPTS)])
    # Machines lost under one job (a requeue each, not a failed attempt) before it fails.
    max_lost_machines: int = attrs.field(
        default=3, validator=[_positive, _at_most(MAX_RETRY_ATTEMPTS)]
    )
    attempt_timeout: float = attrs.field(default=1800.0, validator=_seconds())
    total_timeout: float = attrs.field(default=2100.0, validator=_seconds())  # 35 min


@attrs.frozen
class BudgetConfig:
    """Spending limit in USD (None: no limit)."""

    usd: float | None = None
    warn_fraction: float = attrs.field(default=0.8, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.usd is not None and not 0 <= self.usd <= MAX_BUDGET_USD:  # NaN fails this too
            raise ValueError(
                f"usd: must be a number from 0 to {MAX_BUDGET_USD} (USD), got {self.usd!r}"
            )


@attrs.frozen
class MonitorConfig:
    """The live view and stall detection (MonitorActor)."""

    stall_seconds: float = attrs.field(default=60.0, validator=_seconds())
    json: bool = False


@attrs.frozen
class DownloadsConfig:
    """How outputs are downloaded (a hostile or broken server cannot fill the disk or hang)."""

    # An output larger than this is refused (declared or while streaming): 2 GiB.
    max_bytes: int = attrs.field(default=2 * 1024**3, validator=_positive)
    # No byte of an output for this long: the attempt is abandoned (then retried).
    stall_seconds: float = attrs.field(default=60.0, validator=_seconds())


@attrs.frozen
class Config:
    """Everything a run needs. Build with :func:`load_config`."""

    runcomfy: RunComfyConfig = RunComfyConfig()
    pool: PoolConfig = PoolConfig()
    retry: RetryConfig = RetryConfig()
    budget: BudgetConfig = BudgetConfig()
    monitor: MonitorConfig = MonitorConfig()
    downloads: DownloadsConfig = DownloadsConfig()
    comfyui_url: str | None = attrs.field(default=None, validator=_comfyui_url)
    dev_state_file: str = "~/.conjure/dev_machine.json"

    @property
    def mode(self) -> str:
        """``comfyui`` (a server the user runs), ``runcomfy``, or ``simulated``; half a
        RunComfy credential set is a :class:`ConfigError` (:func:`require_both_credentials`)."""
        if self.comfyui_url:
            return "comfyui"
        require_both_credentials(self.runcomfy)
        if self.runcomfy.configured:
            return "runcomfy"
        return "simulated"


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(Secret, lambda v, _: _as_secret(v))


def _as_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):  # never echo it: it may be the token
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return Secret(value)


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strict_scalar(kind: type) -> Any:
    """Structure hook that refuses silent coercions (TOML ``true`` as an int, "3" as float)."""

    def hook(value: object, _: object) -> Any:
        if isinstance(value, str) and kind is not str:
            try:
                return _parse_text(value, kind)
            except ValueError:
                raise TypeError(f"expected {_KIND_NAMES[kind]}, got {value!r}") from None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        raise TypeError(f"expected {_KIND_NAMES[kind]}, got {value!r}")

    return hook


_KIND_NAMES: Final = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _parse_text(text: str, kind: type) -> Any:
    """Values from the environment and flags arrive as text."""
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    return kind(text)


for _kind in (int, float, bool, str):
    _converter.register_structure_hook(_kind, _strict_scalar(_kind))


def _optional_float(value: object, _: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return float(_strict_scalar(float)(value, float))


def _optional_str(value: object, _: object) -> str | None:
    if value is None or value == "":
        return None
    return _as_str(value)


_converter.register_structure_hook(float | None, _optional_float)
_converter.register_structure_hook(str | None, _optional_str)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


_SECTION_TYPES: Final[dict[str, type[Any]]] = {
    f.name: f.type
    for f in attrs.fields(attrs.resolve_types(Config))
    if isinstance(f.type, type) and attrs.has(f.type)
}
_SECTIONS: Final = set(_SECTION_TYPES)
_FIELDS: Final = frozenset(f.name for f in attrs.fields(Config))


NOT_SETTINGS: Final = frozenset({"CONJURE_TOKEN", "CONJURE_HARNESS_FAILURES"})
"""``CONJURE_*`` variables that are not settings: ``serve``'s bearer token (``--token``) and
the stateful harness's directory of failing logs (read where they are used)."""


def _env_overrides(env: Mapping[str, str], source: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings ``env`` gives; ``source`` (if given) maps each one's dotted key to
    ``environment variable NAME``."""
    out: dict[str, Any] = {}
    if source is None:
        source = {}
    direct = {
        "RUNCOMFY_USER_ID": "runcomfy.user_id",
        "RUNCOMFY_API_TOKEN": "runcomfy.api_token",
        "RUNCOMFY_API_BASE_URL": "runcomfy.base_url",
    }
    for name, dotted in direct.items():
        if env.get(name):
            _set_dotted(out, dotted, env[name])
            source[dotted] = f"environment variable {name}"
    for name, value in env.items():
        if not name.startswith("CONJURE_") or name in NOT_SETTINGS:
            continue
        rest = name[len("CONJURE_") :].lower()
        key = _env_key(rest)
        if key is None or not _env_known(key):
            raise ConfigError(
                f"environment variable {name}: unknown setting"
                + _did_you_mean(rest, _ENV_NAMES, lambda n: f"CONJURE_{n.upper()}")
            )
        _set_dotted(out, key, value)
        source[key] = f"environment variable {name}"
    return out


def _env_known(dotted: str) -> bool:
    section, _, name = dotted.partition(".")
    kind = _SECTION_TYPES.get(section)
    if kind is None:
        return dotted in _FIELDS
    return name in {f.name for f in attrs.fields(kind)}


_ENV_NAMES: Final = sorted(
    [f"{s}_{f.name}" for s, kind in _SECTION_TYPES.items() for f in attrs.fields(kind)]
    + [name for name in _FIELDS if name not in _SECTION_TYPES]
)
"""Every ``CONJURE_*`` setting's name after the prefix, lowercase (``pool_max_machines``)."""


def _env_key(rest: str) -> str | None:
    """``pool_max_machines`` -> ``pool.max_machines``; top-level keys stay flat."""
    for section in _SECTIONS:
        prefix = section + "_"
        if rest.startswith(prefix):
            return f"{section}.{rest[len(prefix) :]}"
    top = {f.name for f in attrs.fields(Config)} - set(_SECTIONS)
    return rest if rest in top else None


def _describe(exc: BaseException) -> str:
    """One line naming the first bad key from a cattrs error tree."""
    messages = cattrs.transform_error(exc, path="$", format_exception=_format_exc)
    first = messages[0] if messages else str(exc)
    # cattrs says "... @ $.pool.max_machines": turn it into "pool.max_machines: ...".
    if " @ $" in first:
        text, _, path = first.rpartition(" @ $")
        key = path.lstrip(".")
        field, sep, rest = text.partition(": ")
        if sep and field.isidentifier():  # a validator named its field
            key, text = (f"{key}.{field}" if key else field), rest
        return f"{key or 'config'}: {text}"
    return first


def _format_exc(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown key(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key missing"
    return str(exc) or type(exc).__name__


def structure_config(tree: Mapping[str, Any]) -> Config:
    """Structure a nested dict of settings into a :class:`Config`, or raise ConfigError."""
    _check_names(tree, "bad configuration")
    for section in _SECTIONS:
        if section in tree and not isinstance(tree[section], Mapping):
            raise ConfigError(f"bad configuration: {section}: expected a table of settings")
    try:
        return _converter.structure(dict(tree), Config)
    except (ClassValidationError, IterableValidationError) as exc:
        raise ConfigError(f"bad configuration: {_describe(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad configuration: {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a ConfigError, and so is a
    section or a setting it names that does not exist (named with the file)."""
    try:
        with path.open("rb") as fh:
            tree = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {path} is a directory: pass a TOML file (--config PATH)"
        ) from None
    except UnicodeDecodeError as exc:  # tomllib decodes the bytes first: a binary file
        raise ConfigError(
            f"config file {path} is not valid TOML: not UTF-8 text (byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    _check_names(tree, f"config file {path}")
    return tree


def _did_you_mean(name: str, choices: list[str], shown: Callable[[str], str] = repr) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``; else `` (one of: a, b)``
    when they are few, or where they are listed."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {shown(close[0])}?)"
    if len(choices) <= 12:
        return f" (one of: {', '.join(shown(c) for c in sorted(choices))})"
    return " (docs/config.md lists every setting)"


def _check_names(tree: Mapping[str, Any], where: str) -> None:
    """Every section and setting ``tree`` names exists; else one line saying which does
    not, where it was (``where``) and the closest name (or the names there are)."""
    for key, value in tree.items():
        if key not in _FIELDS:
            if isinstance(value, Mapping):
                what = f"unknown section [{key}]"
                hint = _did_you_mean(key, list(_SECTION_TYPES), lambda n: f"[{n}]")
            else:
                what = f"unknown top-level setting {key!r}"
                homes = [n for n, kind in _SECTION_TYPES.items() if key in attrs.fields_dict(kind)]
                top = sorted(_FIELDS - set(_SECTION_TYPES))
                if homes:
                    hint = f" (it goes in {' or '.join(f'[{h}]' for h in homes)})"
                else:
                    hint = _did_you_mean(key, top)
                    if hint.startswith(" (one of"):
                        hint = hint[:-1] + "; the others go in a [section])"
            raise ConfigError(f"{where}: {what}{hint}")
        section = _SECTION_TYPES.get(key)
        if section is None or not isinstance(value, Mapping):
            continue  # a value of the wrong type: structuring names it
        names = [f.name for f in attrs.fields(section)]
        for name in value:
            if name not in names:
                raise ConfigError(
                    f"{where}: [{key}] has no setting {name!r}" + _did_you_mean(name, names)
                )


def load_config(
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    sources: dict[str, str] | None = None,
    pool_checked: bool = True,
) -> Config:
    """Merge defaults < TOML (``config_file`` or ``./conjure.toml``) < ``env`` < ``flags``.

    ``flags`` maps dotted keys (``"pool.max_machines"``) to values; ``None`` values are
    skipped (a flag the user did not give). ``sources`` (if given) is filled with where each
    setting the file or the environment gave came from (``"runcomfy.api_token"`` ->
    ``"environment variable CONJURE_RUNCOMFY_API_TOKEN"``), for messages that name it
    (:func:`require_both_credentials`). ``pool_checked``: refuse pool settings that
    contradict each other (False for a command that runs no pool: ``machine``, ``status``,
    so that a contradictory ``conjure.toml`` never stands between an operator and the stop
    of a billing machine).
    """
    tree: dict[str, Any] = {}
    source: dict[str, str] = {}  # dotted key -> where its value came from, for a bad one
    path: Path | None = Path(config_file) if config_file is not None else None
    if path is None:
        default = (cwd or Path.cwd()) / DEFAULT_CONFIG_FILE
        # A directory there (a container's mount of a file that was missing makes one) is
        # said, not skipped: its settings would be silently missing from the run.
        if default.is_file() or default.is_dir():
            path = default
    if path is not None:
        tree = _merge(tree, read_toml(path))
        source.update(dict.fromkeys(_dotted_keys(tree), f"config file {path}"))
    env_tree = _env_overrides(os.environ if env is None else env, source)
    tree = _merge(tree, env_tree)
    over: dict[str, Any] = {}
    for dotted, value in (flags or {}).items():
        if value is not None:
            _set_dotted(over, dotted, value)
            source.pop(dotted, None)  # said by its flag (commands/cloud_args.py)
    tree = _merge(tree, over)
    if sources is not None:
        sources.update(source)
    try:
        config = structure_config(tree)
    except ConfigError as exc:
        raise _named_by_source(exc, source) from None
    flagged = {dotted for dotted, value in (flags or {}).items() if value is not None}
    if pool_checked:
        _refuse_contradictions(config.pool, source, flagged)
    return config


def _said(key: str, value: float, source: Mapping[str, str], flagged: set[str]) -> str:
    """``pool.renew_margin = 700 (set in config file F)``: a setting, its value and where
    that came from (the file, the environment variable, a flag, or the default)."""
    if key in flagged:
        where = "given by its flag"
    elif key in source:
        how = "by" if source[key].startswith("environment") else "in"
        where = f"set {how} {source[key]}"
    else:
        where = "the default"
    return f"{key} = {value:g} ({where})"


def _refuse_contradictions(pool: PoolConfig, source: Mapping[str, str], flagged: set[str]) -> None:
    """Settings each valid alone that contradict each other: one line naming each, its
    value and where it was set (ConfigError, exit 2).

    The pool renews a machine's lease at a listing (every ``poll_interval``) that finds
    less than ``renew_margin`` left on it, for ``lease_seconds`` from then. So the margin
    must be shorter than the lease, and the polls closer together than both the margin
    (else a lease can run out between two polls under a job) and what a renewed lease
    has left before its margin (else every poll renews every machine: a RunComfy request
    each, the account's 1 request/s spent on them). Pairs that are only odd (a warm pool
    larger than ``max_machines``, an attempt timeout beyond the job's: the smaller
    applies) are not refused: docs/config.md says so.
    """

    def said(key: str) -> str:
        return _said(f"pool.{key}", getattr(pool, key), source, flagged)

    lease, margin, poll = pool.lease_seconds, pool.renew_margin, pool.poll_interval
    if margin >= lease:
        raise ConfigError(
            f"bad configuration: {said('renew_margin')} is not less than"
            f" {said('lease_seconds')}: a lease always has less than the margin left, so"
            " every poll would renew every machine's lease (a RunComfy request each, the"
            " account's rate limit spent on them): set pool.renew_margin below"
            " pool.lease_seconds (defaults 180 and 600)"
        )
    if poll >= lease - margin:
        # A launch asks for a little less than the lease (its marker): up to about half.
        first = launch_duration(int(lease), taken=(), draw=1.0)
        unseen = (
            ", and a machine's first lease can end before a poll sees it Ready (billed,"
            " never used, launched again)"
            if poll >= first
            else ""
        )
        raise ConfigError(
            f"bad configuration: {said('poll_interval')} is not less than pool.lease_seconds"
            f" - pool.renew_margin = {lease - margin:g}, with {said('lease_seconds')} and"
            f" {said('renew_margin')}: every poll would find each lease within its margin and"
            f" renew it (a RunComfy request per machine per poll){unseen}: poll more often,"
            " lengthen the lease or lower the margin"
        )
    if poll >= margin:
        raise ConfigError(
            f"bad configuration: {said('poll_interval')} is not less than"
            f" {said('renew_margin')}: a lease is renewed by a poll that finds less than the"
            " margin left, so with polls further apart it can run out between two polls"
            " with a job on its machine (the job loses it): poll more often or raise"
            " pool.renew_margin"
        )


def _dotted_keys(tree: Mapping[str, Any]) -> list[str]:
    """``{"pool": {"max_machines": 2}, "comfyui_url": ...}`` -> ``pool.max_machines``, ..."""
    keys: list[str] = []
    for key, value in tree.items():
        if key in _SECTION_TYPES and isinstance(value, Mapping):
            keys.extend(f"{key}.{name}" for name in value)
        else:
            keys.append(key)
    return keys


def _named_by_source(exc: ConfigError, source: Mapping[str, str]) -> ConfigError:
    """``bad configuration: pool.max_machines: ...`` said with where that value came from,
    ``(set by environment variable CONJURE_POOL_MAX_MACHINES)`` or ``(set in config file
    F)``: where a user looks for it. Any other error as it is."""
    text = str(exc)
    for key, where in source.items():
        if text.startswith(f"bad configuration: {key}: "):
            how = "by" if where.startswith("environment") else "in"
            return ConfigError(f"{text} (set {how} {where})")
    return exc


def require_both_credentials(
    runcomfy: RunComfyConfig, source: Mapping[str, str] | None = None
) -> None:
    """Half a credential set is a mistake, not a wish for the simulated cloud: say which
    half is missing (never its value) instead of silently running somewhere else. The half
    that is set is named as the user set it (``source``: :func:`load_config`'s map of where
    each setting came from): ``CONJURE_RUNCOMFY_API_TOKEN``, or the key in a config file."""
    if bool(runcomfy.user_id) == bool(runcomfy.api_token):
        return
    have, missing = ("user_id", "api_token") if runcomfy.user_id else ("api_token", "user_id")
    where = (source or {}).get(f"runcomfy.{have}", "")
    if where.startswith("config file "):
        said = f"runcomfy.{have} (in {where})"
        wanted = f"runcomfy.{missing}"
    elif where.startswith("environment variable CONJURE_"):
        said = where.removeprefix("environment variable ")
        wanted = f"CONJURE_RUNCOMFY_{missing.upper()} (or RUNCOMFY_{missing.upper()})"
    else:
        said, wanted = f"RUNCOMFY_{have.upper()}", f"RUNCOMFY_{missing.upper()}"
    raise ConfigError(
        f"{said} is set but {wanted} is not (runcomfy.user_id and runcomfy.api_token in a"
        " config file): set both to use RunComfy (docs/runcomfy.md says where to find them),"
        " or neither for the simulated cloud"
    )


def require_priced_server_type(config: Config) -> None:
    """A RunComfy launch must be billable: its server type needs a price in the plan's
    table (the protocol's open list of server types has some the table does not price)."""
    from conjure_actors.domain.errors import PriceTableError
    from conjure_actors.domain.prices import default_price_table

    try:
        default_price_table(config.runcomfy.plan).rate(config.runcomfy.server_type)
    except PriceTableError as exc:
        raise ConfigError(f"bad configuration: runcomfy.server_type: {exc}") from None
