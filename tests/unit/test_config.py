"""queued/config.py: for every key and every source, the strongest source
present decides (flags, environment, `config set`, file, defaults)."""

from __future__ import annotations

import itertools

import pytest

from queued import config
from queued.settings import CONFIG_KEYS, Settings

DEFAULTS = Settings(concurrency=4)

# key -> a distinct valid value per source (as each source gives it), and the
# value the daemon then uses.
VALUES: dict[str, dict[str, tuple[object, object]]] = {
    "max-retries": {
        "flag": ("11", 11),
        "environment": ("12", 12),
        "config set": ("13", 13),
        "file": (14, 14),
    },
    "backoff-base": {
        "flag": ("1.1", 1.1),
        "environment": ("1.2", 1.2),
        "config set": ("1.3", 1.3),
        "file": (1.4, 1.4),
    },
    "backoff-max": {
        "flag": ("1m", 60.0),
        "environment": ("2m", 120.0),
        "config set": ("3m", 180.0),
        "file": ("4m", 240.0),
    },
    "timeout": {
        "flag": ("1h", 3600.0),
        "environment": ("2h", 7200.0),
        "config set": ("none", None),
        "file": (40, 40.0),
    },
    "concurrency": {"flag": ("1", 1), "environment": ("0", 0), "config set": ("3", 3), "file": (5, 5)},
    "log-max-size": {
        "flag": ("1M", 2**20),
        "environment": ("2M", 2**21),
        "config set": ("3k", 3072),
        "file": ("4k", 4096),
    },
    "kill-grace": {
        "flag": ("1s", 1.0),
        "environment": ("2s", 2.0),
        "config set": ("3s", 3.0),
        "file": (4, 4.0),
    },
    "on-finish": {
        "flag": ("./f.sh", "./f.sh"),
        "environment": ("./e.sh", "./e.sh"),
        "config set": ("none", None),
        "file": ("./c.sh", "./c.sh"),
    },
    "socket": {
        "flag": ("/f.sock", "/f.sock"),
        "environment": ("/e.sock", "/e.sock"),
        "file": ("/c.sock", "/c.sock"),
    },
    "data-dir": {"flag": ("/f", "/f"), "environment": ("/e", "/e"), "file": ("/c", "/c")},
    "log-level": {
        "flag": ("debug", "debug"),
        "environment": ("warning", "warning"),
        "file": ("error", "error"),
    },
    "allow-group": {"flag": ("wheel", "wheel"), "environment": ("adm", "adm"), "file": ("staff", "staff")},
    "http": {
        "flag": ("127.0.0.1:8080", "127.0.0.1:8080"),
        "environment": (":9000", ":9000"),
        "file": ("[::1]:80", "[::1]:80"),
    },
    "http-names": {"flag": ("a.example", "a.example"), "environment": ("b", "b"), "file": ("c, d", "c, d")},
    "store": {
        "flag": ("postgresql://a/q", "postgresql://a/q"),
        "environment": ("postgresql://b/q", "postgresql://b/q"),
        "file": ("sqlite", "sqlite"),
    },
    "exit-when-idle": {"flag": ("true", True), "environment": ("no", False), "file": (True, True)},
    "exit-after-jobs": {"flag": ("3", 3), "environment": ("40", 40), "file": (500, 500)},
    "node": {"flag": ("gpu1", "gpu1"), "environment": ("web-2", "web-2"), "file": (" c ", "c")},
    "node-lease": {"flag": ("3", 3.0), "environment": ("1m", 60.0), "file": ("45s", 45.0)},
    "queues": {
        "flag": ("gpu,default", ("gpu", "default")),
        "environment": ("a", ("a",)),
        "file": ("b, c,b", ("b", "c")),
    },
    "resources": {
        "flag": ("gpu=2,licence=1", {"gpu": 2, "licence": 1}),
        "environment": ("gpu=0", {"gpu": 0}),
        "file": ("seat=3", {"seat": 3}),
    },
    "starvation-patience": {"flag": ("2", 2.0), "environment": ("5m", 300.0), "file": ("90s", 90.0)},
}
DAEMON_DEFAULTS = {
    "socket": None,
    "data-dir": None,
    "log-level": "info",
    "allow-group": None,
    "http": None,
    "http-names": None,
    "store": None,
    "exit-when-idle": False,
    "exit-after-jobs": None,
    "node": None,
    "node-lease": 30.0,
    "queues": None,
    "resources": None,
    "starvation-patience": 60.0,
}
STRONGEST_FIRST = ("flag", "environment", "config set", "file")


def test_every_key_is_in_the_table() -> None:
    assert set(VALUES) == set(config.KEYS)
    assert set(config.SETTINGS_KEYS) == set(CONFIG_KEYS)


def _cases():  # type: ignore[no-untyped-def]
    for key, by_source in VALUES.items():
        sources = [s for s in STRONGEST_FIRST if s in by_source]
        for n in range(len(sources) + 1):
            for present in itertools.combinations(sources, n):
                yield pytest.param(key, present, id=f"{key}:{'+'.join(present) or 'default'}")


@pytest.mark.parametrize(("key", "present"), list(_cases()))
def test_the_strongest_source_present_decides(key: str, present: tuple[str, ...]) -> None:
    given = {source: VALUES[key][source][0] for source in present}
    sources = config.Sources.read(
        flags={key: given.get("flag")},
        environ={config.env_variable(key): given["environment"]} if "environment" in given else {},
        file={key: given["file"]} if "file" in given else {},
        persisted={key: given["config set"]} if "config set" in given else {},
    )
    winner = present[0] if present else "default"
    assert sources.origin(key) == winner
    if key in config.SETTINGS_KEYS:
        field = CONFIG_KEYS[key][0]
        expected = VALUES[key][winner][1] if present else getattr(DEFAULTS, field)
        assert getattr(config.effective_settings(DEFAULTS, sources), field) == expected
    else:
        expected = VALUES[key][winner][1] if present else DAEMON_DEFAULTS[key]
        assert getattr(config.daemon_values(sources), key.replace("-", "_")) == expected


def test_every_key_has_a_variable() -> None:
    assert [config.env_variable(k) for k in config.KEYS] == [
        "QUEUED_MAX_RETRIES",
        "QUEUED_BACKOFF_BASE",
        "QUEUED_BACKOFF_MAX",
        "QUEUED_TIMEOUT",
        "QUEUED_CONCURRENCY",
        "QUEUED_LOG_MAX_SIZE",
        "QUEUED_KILL_GRACE",
        "QUEUED_ON_FINISH",
        "QUEUED_SOCKET",
        "QUEUED_DATA_DIR",
        "QUEUED_LOG_LEVEL",
        "QUEUED_ALLOW_GROUP",
        "QUEUED_HTTP",
        "QUEUED_HTTP_NAMES",
        "QUEUED_STORE",
        "QUEUED_EXIT_WHEN_IDLE",
        "QUEUED_EXIT_AFTER_JOBS",
        "QUEUED_NODE",
        "QUEUED_NODE_LEASE",
        "QUEUED_QUEUES",
        "QUEUED_RESOURCES",
        "QUEUED_STARVATION_PATIENCE",
    ]


def test_a_store_no_engine_takes_is_refused_by_source_without_its_password() -> None:
    sources = config.Sources.read(flags={}, environ={"QUEUED_STORE": "mysql://u:pw@h/q"}, file={})
    with pytest.raises(ValueError, match="QUEUED_STORE") as caught:
        config.daemon_values(sources)
    assert "pw" not in str(caught.value) and "give a postgresql:// URL" in str(caught.value)


def test_the_file_may_spell_keys_with_underscores() -> None:
    sources = config.Sources.read(flags={}, environ={}, file={"data_dir": "/d", "Max_Retries": 1})
    assert sources.file == {"data-dir": "/d", "max-retries": 1}


def test_an_empty_variable_is_unset() -> None:
    sources = config.Sources.read(flags={}, environ={"QUEUED_TIMEOUT": ""}, file={"timeout": "5m"})
    assert sources.origin("timeout") == "file"


def test_config_set_never_names_the_daemons_own_keys() -> None:
    sources = config.Sources.read(
        flags={}, environ={}, file={}, persisted={"data-dir": "/x", "timeout": "1m"}
    )
    assert sources.persisted == {"timeout": "1m"}


@pytest.mark.parametrize(
    ("file", "environ", "named"),
    [
        ({"colour": "red"}, {}, "unknown config key 'colour'.*in the config file"),
        ({"max-retries": -4}, {}, "max-retries"),
        # a bad value is reported even where a stronger source masks it
        ({"timeout": "soon"}, {"QUEUED_TIMEOUT": "1h"}, "from the config file"),
        ({}, {"QUEUED_KILL_GRACE": "0"}, "QUEUED_KILL_GRACE"),
        ({}, {"QUEUED_LOG_LEVEL": "loud"}, "QUEUED_LOG_LEVEL"),
        ({"data-dir": 5}, {}, "data-dir"),
        ({}, {"QUEUED_NODE": "two words"}, "invalid value for node: 'two words'.*QUEUED_NODE"),
        ({"node": "x" * 64}, {}, "longer than 63"),
        ({}, {"QUEUED_NODE_LEASE": "0"}, "node-lease.*QUEUED_NODE_LEASE"),
        ({"queues": "gpu,,cpu"}, {}, "invalid value for queues"),
        ({}, {"QUEUED_RESOURCES": "gpu=two"}, "invalid count 'two' for gpu.*QUEUED_RESOURCES"),
        ({"resources": "slots=4"}, {}, "'slots' is not a resource.*config file"),
        ({}, {"QUEUED_RESOURCES": "gpu=99999999"}, "invalid count '99999999'"),
        ({"starvation-patience": "soon"}, {}, "starvation-patience"),
    ],
)
def test_bad_values_name_their_source(file: dict, environ: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        sources = config.Sources.read(flags={}, environ=environ, file=file)
        config.effective_settings(DEFAULTS, sources)
        config.daemon_values(sources)
