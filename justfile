# List the recipes.
default:
    @just --list

# The test recipes keep Python's bytecode and pytest's rewritten test modules in __pycache__
# (git-ignored) even where the environment sets PYTHONDONTWRITEBYTECODE: with it, each xdist
# worker compiles and assertion-rewrites ~350 files on every run (collection 4.5 -> 2.3 s of
# CPU per worker). A stale cache is not a risk: both are checked against the source's mtime.

# The inner loop: every test not marked slow, on both cores (fast hypothesis profile).
test *ARGS:
    PYTHONDONTWRITEBYTECODE= python -m pytest -q -n 2 -m "not slow" {{ARGS}}

# The slow tests only (subprocesses, loopback servers, long properties); CI runs them too.
test-slow *ARGS:
    PYTHONDONTWRITEBYTECODE= python -m pytest -q -m slow {{ARGS}}

# The whole suite in one run, as CI sees it.
test-all *ARGS:
    PYTHONDONTWRITEBYTECODE= python -m pytest -q -n 2 {{ARGS}}

# Lint without editing anything.
lint:
    ruff check .
    ruff format --check .

# Format and fix what ruff can fix.
fmt:
    ruff format .
    ruff check --fix .

# Type-check (mypy strict on eventlog, domain and runtime).
typecheck:
    mypy

# Check the import contracts (layers, pure domain, generic runtime) in pyproject.toml.
imports:
    lint-imports --no-cache

# Everything CI runs.
check: lint typecheck imports test test-slow

# Run every benchmark and print its table.
bench:
    for b in bench/[!_]*.py; do echo "== $b"; python "$b" || exit 1; done

# Long property-based runs (thousands of examples, database kept between runs).
fuzz *ARGS:
    HYPOTHESIS_PROFILE=fuzz python -m pytest -q -o faulthandler_timeout=0 tests {{ARGS}}

# Run the CONJURE example job (embedded simulated cloud unless credentials are set).
run *ARGS:
    python -m conjure_actors run {{ARGS}}
