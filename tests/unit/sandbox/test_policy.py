"""Policies load from TOML and fail loudly, naming file, key and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from dad_sandbox.errors import PolicyError
from dad_sandbox.sandbox import available_policies, load_policy
from dad_sandbox.sandbox._units import parse_duration, parse_size


def test_builtin_policies_load() -> None:
    """default and untrusted ship and validate."""
    assert {"default", "untrusted"} <= set(available_policies())
    assert load_policy("default").name == "default"


def test_untrusted_is_hardened() -> None:
    """untrusted: non-root, no caps, no-new-privileges, read-only root with capped tmpfs, no network, limits."""
    p = load_policy("untrusted")
    assert p.user == "auto" and p.network == "none"
    assert p.cap_drop == ["ALL"] and p.cap_add == []
    assert p.no_new_privileges and p.read_only_root
    assert p.tmpfs and all(size > 0 for size in p.tmpfs.values())
    assert p.memory and p.pids_limit and p.cpus and p.timeout


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path) -> None:
    """A typo is an error with the file, the key and the allowed keys."""
    path = write(tmp_path, 'image = "x"\nmemroy = "1g"\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    msg = str(exc.value)
    assert str(path) in msg and "memroy" in msg and "allowed keys" in msg and "memory" in msg


@pytest.mark.parametrize(
    ("line", "key", "hint"),
    [
        ('memory = "12 parsecs"', "memory", "512m"),
        ("pids_limit = -5", "pids_limit", "greater than 0"),
        ('timeout = "-3"', "timeout", "duration"),
        ("cpus = 0", "cpus", "greater than 0"),
        ('network = "wifi"', "network", "'none'"),
        ('user = "alice"', "user", "UID"),
        ('cap_add = ["FLY"]', "cap_add", "allowed"),
        ('[tmpfs]\n"relative" = "1m"', "tmpfs", "absolute"),
    ],
)
def test_bad_values_are_explained(tmp_path: Path, line: str, key: str, hint: str) -> None:
    """Bad units, negative limits and unknown choices name the key and what is allowed."""
    path = write(tmp_path, f'image = "x"\n{line}\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert key in str(exc.value) and hint in str(exc.value) and str(path) in str(exc.value)


def test_not_toml(tmp_path: Path) -> None:
    """A file that is not TOML says so."""
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(write(tmp_path, "image = \n"))


def test_unknown_name_lists_available() -> None:
    """An unknown policy name lists the ones there are."""
    with pytest.raises(PolicyError, match="untrusted"):
        load_policy("nosuchpolicy")


def test_policy_error_is_value_error() -> None:
    """Callers catching ValueError keep working."""
    assert issubclass(PolicyError, ValueError)


def test_overrides_are_validated() -> None:
    """with_overrides checks values like a file would."""
    p = load_policy("untrusted")
    assert p.with_overrides(timeout=5).timeout == 5
    with pytest.raises(PolicyError, match="timeout"):
        p.with_overrides(timeout=-1)


def test_hash_tracks_content() -> None:
    """Same settings, same hash; a change, a new hash."""
    p = load_policy("untrusted")
    assert p.hash == load_policy("untrusted").hash
    assert p.hash != p.with_overrides(timeout=7).hash


@pytest.mark.parametrize(
    ("text", "expected"), [("512m", 512 << 20), ("1g", 1 << 30), ("64MiB", 64 << 20), ("100", 100), (2048, 2048), ("1.5k", 1536)]
)
def test_parse_size(text: str | int, expected: int) -> None:
    """Sizes use binary multipliers."""
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25)])
def test_parse_duration(text: str, expected: float) -> None:
    """Durations accept s, m, h and ms."""
    assert parse_duration(text) == expected


def test_a_policy_that_says_nothing_is_hardened(tmp_path: Path) -> None:
    """Omitted settings take the hardened values; loosening must be explicit."""
    p = load_policy(write(tmp_path, 'image = "x"\n'))
    hardened = load_policy("untrusted")
    for key in ("network", "user", "read_only_root", "cap_drop", "cap_add", "no_new_privileges", "memory",
                "pids_limit", "cpus", "tmpfs", "disk_quota", "max_file_size", "env", "env_allow"):
        assert getattr(p, key) == getattr(hardened, key), key


def test_limits_are_lifted_only_by_saying_unlimited(tmp_path: Path) -> None:
    """'unlimited' lifts a limit; a missing key never does."""
    p = load_policy(write(tmp_path, 'image = "x"\nmemory = "unlimited"\npids_limit = "unlimited"\n'))
    assert p.memory is None and p.pids_limit is None and p.cpus == 1.0


def test_gvisor_policy_selects_runsc() -> None:
    """The gvisor policy is untrusted on the runsc runtime, with room for gVisor's own threads."""
    p = load_policy("gvisor")
    assert p.runtime == "runsc" and p.pids_limit > load_policy("untrusted").pids_limit
    assert p.cap_drop == ["ALL"] and p.network == "none" and p.read_only_root
