"""Settings from the environment and eventbus.toml: every bad value names its variable."""

from __future__ import annotations

import pytest

from eventbus import Config, ConfigError
from eventbus.testing import started_config

started = started_config

BAD_VALUES = [
    ("EVENTBUS_PORT", "http"),
    ("EVENTBUS_PORT", "70000"),
    ("WEBSOCKET_ENABLED", "maybe"),
    ("EVENTBUS_ALLOW_ANY_ORIGIN", "perhaps"),
    ("WEBSOCKET_ASYNC_MODE", "asyncio"),
    ("WEBSOCKET_CORS_ORIGINS", "app.example.com"),
    ("EVENTBUS_HISTORY_SIZE", "0"),
    ("EVENTBUS_HISTORY_MAX_AGE", "an hour"),
    ("EVENTBUS_API_KEYS", "short=bot"),
    ("EVENTBUS_API_KEYS", "abcdefghijklmnopqrstuvwxyz"),
    ("EVENTBUS_API_KEYS", "abcdefghijklmnopqrstuvwxyz="),
    ("EVENTBUS_LOG_SINK_MAX_BYTES", "100"),
    ("EVENTBUS_LOG_SINK_BACKUPS", "-1"),
    ("EVENTBUS_LOG_SINK_FLUSH", "never"),
    ("EVENTBUS_MAX_EVENT_BYTES", "12"),
    ("EVENTBUS_QUEUE_SIZE", "0"),
    ("EVENTBUS_QUEUE_OVERFLOW", "block"),
    ("EVENTBUS_CHAT_MAX_LENGTH", "0"),
    ("EVENTBUS_CLIENT_RATE", "0"),
    ("EVENTBUS_CLIENT_BURST", "many"),
    ("EVENTBUS_TYPING_INTERVAL", "-1"),
    ("EVENTBUS_WEBHOOKS", "not json"),
    ("EVENTBUS_WEBHOOKS", '{"url": "https://x"}'),
    ("EVENTBUS_CONFIG", "/no/such/eventbus.toml"),
    ("EVENTBUS_REDIS_BUFFER", "ten"),
    ("EVENTBUS_REDIS_BUFFER", "0"),
    ("EVENTBUS_REDIS_CLAIM_IDLE", "soon"),
    ("EVENTBUS_REDIS_FANOUT_MAXLEN", "lots"),
    ("EVENTBUS_REDIS_INGEST_MAXLEN", "-5"),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_a_bad_value_names_its_variable(isolated_env, name, value):
    with pytest.raises(ConfigError) as info:
        started({**isolated_env, name: value})
    assert str(info.value).startswith(name + ":")
    assert info.value.code == "config_error"


def test_api_key_errors_do_not_echo_the_key(isolated_env):
    with pytest.raises(ConfigError) as info:
        started({"EVENTBUS_API_KEYS": "topsecretvalue-without-user"})
    assert "topsecretvalue-without-user" not in str(info.value)


def test_defaults(isolated_env):
    config = started(isolated_env)
    assert (config.host, config.port, config.async_mode) == ("127.0.0.1", 5050, "threading")
    assert config.cors_origins == [] and config.load_plugins is None
    assert (config.log_sink_path, config.log_sink_flush, config.overflow) == (None, "batch", "drop_oldest")


def test_values_are_parsed(isolated_env):
    config = started({
        "EVENTBUS_PORT": "6060", "WEBSOCKET_ENABLED": "no", "WEBSOCKET_ASYNC_MODE": "Gevent",
        "WEBSOCKET_CORS_ORIGINS": "https://a.example, http://localhost:3000",
        "EVENTBUS_API_KEYS": "abcdefghijklmnop=ingest:publisher+admin,qrstuvwxyzabcdef=bot",
        "EVENTBUS_LOAD_PLUGINS": "eventbus_auth, eventbus_socketio, eventbus_webhook",
        "EVENTBUS_DISABLE_PLUGINS": "c",
        "EVENTBUS_WEBHOOKS": '[{"url": "https://hooks.example/x"}]', "EVENTBUS_HISTORY_MAX_AGE": "90.5",
    })
    assert (config.port, config.websocket_enabled, config.async_mode) == (6060, False, "gevent")
    assert config.cors_origins == ["https://a.example", "http://localhost:3000"]
    assert config.api_keys == {"abcdefghijklmnop": ("ingest", ("publisher", "admin")),
                               "qrstuvwxyzabcdef": ("bot", ("publisher",))}
    assert config.load_plugins == ["eventbus_auth", "eventbus_socketio", "eventbus_webhook"]
    assert config.disable_plugins == ["c"]
    assert config.webhooks == [{"url": "https://hooks.example/x"}]
    assert config.history_max_age == 90.5


def test_any_origin_needs_an_explicit_yes(isolated_env):
    with pytest.raises(ConfigError, match="EVENTBUS_ALLOW_ANY_ORIGIN=true") as info:
        started({"WEBSOCKET_CORS_ORIGINS": "*"})
    assert str(info.value).startswith("WEBSOCKET_CORS_ORIGINS:")
    config = started({"WEBSOCKET_CORS_ORIGINS": "*", "EVENTBUS_ALLOW_ANY_ORIGIN": "true"})
    assert config.cors_origins == ["*"] and config.allow_any_origin


TOML = '''
port = 7070
async_mode = "eventlet"
cors_origins = ["https://app.example"]
LOG_SINK_PATH = "events.jsonl"
load_plugins = ["eventbus_logsink", "eventbus_socketio", "eventbus_auth", "eventbus_webhook"]
api_keys = [{key = "abcdefghijklmnop", user = "ingest", roles = ["publisher"]}]

[[webhooks]]
url = "https://hooks.example/in"

[plugins.my_plugin]
channel = "#ops"
'''


def test_toml_file_in_the_working_directory(isolated_env, tmp_path):
    (tmp_path / "eventbus.toml").write_text(TOML)
    config = started(isolated_env)
    assert (config.port, config.async_mode, config.log_sink_path) == (7070, "eventlet", "events.jsonl")
    assert config.cors_origins == ["https://app.example"]
    assert config.load_plugins == ["eventbus_logsink", "eventbus_socketio", "eventbus_auth", "eventbus_webhook"]
    assert config.api_keys == {"abcdefghijklmnop": ("ingest", ("publisher",))}
    assert config.webhooks == [{"url": "https://hooks.example/in"}]
    assert config.plugin_settings("my_plugin") == {"channel": "#ops"}
    assert config.plugin_settings("other") == {}


def test_environment_wins_over_the_file(isolated_env, tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text(TOML)
    config = started({"EVENTBUS_CONFIG": str(path), "EVENTBUS_PORT": "8080",
                      "EVENTBUS_LOAD_PLUGINS": "eventbus_socketio"})
    assert (config.port, config.async_mode, config.load_plugins) == (8080, "eventlet", ["eventbus_socketio"])


def test_a_plugin_that_is_not_loaded_has_no_settings(isolated_env):
    config = started({**isolated_env, "EVENTBUS_LOAD_PLUGINS": "", "WEBSOCKET_ENABLED": "maybe"})
    assert "websocket_enabled" not in config.declared  # not read, so not refused either
    with pytest.raises(AttributeError, match="no loaded plugin declares it"):
        _ = config.websocket_enabled


def test_bad_toml_values_are_errors_too(isolated_env, tmp_path):
    (tmp_path / "eventbus.toml").write_text("port = 99999\n")
    with pytest.raises(ConfigError, match=r"^EVENTBUS_PORT:"):
        started(isolated_env)
    (tmp_path / "eventbus.toml").write_text("port = \n")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        started(isolated_env)


def test_the_command_line_reports_configuration_errors(isolated_env, monkeypatch, capsys):
    from eventbus.cli import main

    monkeypatch.setenv("EVENTBUS_PORT", "http")
    with pytest.raises(SystemExit) as info:
        main(["plugins"])
    assert info.value.code == 2
    assert "configuration error: EVENTBUS_PORT" in capsys.readouterr().err


def test_secret_key_is_generated_once_with_mode_0600(tmp_path):
    config = Config(data_dir=str(tmp_path / "data"))
    key = config.ensure_secret_key()
    path = tmp_path / "data" / "secret_key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert Config(data_dir=str(tmp_path / "data")).ensure_secret_key() == key
    assert Config(secret_key="given", data_dir=str(tmp_path / "other")).ensure_secret_key() == "given"
    assert not (tmp_path / "other").exists()


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request):
    """Run the test under this umask (restored afterwards)."""
    import os

    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_data_dir_and_secret_are_private_whatever_the_umask(tmp_path, umask):
    config = Config(data_dir=str(tmp_path / "parent" / "data"))
    assert config.ensure_data_dir() == tmp_path / "parent" / "data"
    config.ensure_secret_key()
    assert _mode(tmp_path / "parent") == 0o700  # missing parents are created private too
    assert _mode(tmp_path / "parent" / "data") == 0o700
    assert _mode(tmp_path / "parent" / "data" / "secret_key") == 0o600


def test_loose_data_dir_and_secret_are_tightened_with_a_warning(tmp_path, caplog):
    import logging
    import os

    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    (data / "secret_key").write_text("k" * 40 + "\n")
    os.chmod(data / "secret_key", 0o644)
    with caplog.at_level(logging.WARNING, logger="eventbus.files"):
        assert Config(data_dir=str(data)).ensure_secret_key() == "k" * 40
    assert _mode(data) == 0o700
    assert _mode(data / "secret_key") == 0o600
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "directory was readable by other users" in warned and "file was readable" in warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="eventbus.files"):
        Config(data_dir=str(data)).ensure_secret_key()
    assert not caplog.records  # private already: nothing to say


@pytest.mark.parametrize("mode", ["w", "a", "x", "wb", "ab", "a+", "w+"])
def test_open_private_creates_0600_files(tmp_path, umask, mode):
    from eventbus.files import open_private

    path = tmp_path / "f"
    with open_private(path, mode) as fh:
        fh.write(b"x" if "b" in mode else "x")
    assert _mode(path) == 0o600
    assert path.read_text() == "x"


def test_open_private_tightens_an_existing_file_and_keeps_its_content(tmp_path):
    import os

    from eventbus.files import open_private

    path = tmp_path / "log.jsonl"
    path.write_text("one\n")
    os.chmod(path, 0o666)
    with open_private(path, "a", encoding="utf-8") as fh:
        fh.write("two\n")
    assert _mode(path) == 0o600
    assert path.read_text() == "one\ntwo\n"
    with open_private(path, "r") as fh:
        assert fh.read() == "one\ntwo\n"
    with pytest.raises(ValueError):
        open_private(path, "rw")
    with pytest.raises(FileExistsError):
        open_private(path, "x")


def test_private_dir_keeps_the_owner_bits_of_an_existing_dir(tmp_path):
    import os

    from eventbus.files import private_dir

    target = tmp_path / "d"
    target.mkdir()
    os.chmod(target, 0o777)
    assert private_dir(target) == target
    assert _mode(target) == 0o700
    os.chmod(target, 0o700)
    private_dir(str(target))
    assert _mode(target) == 0o700


def test_the_default_data_dir_is_one_per_user_whatever_the_folder(isolated_env, monkeypatch, tmp_path):
    """Without EVENTBUS_DATA_DIR, every process of the user, started from any folder, uses
    the platform's user-data folder, so they share one generated key."""
    import sys
    from pathlib import Path

    import platformdirs

    env = {k: v for k, v in isolated_env.items() if k != "EVENTBUS_DATA_DIR"}
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    expected = platformdirs.user_data_dir("eventbus", appauthor=False)
    if sys.platform.startswith("linux"):
        assert expected == str(tmp_path / "home" / "data" / "eventbus")
    assert Config().data_dir == expected
    keys = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        config = started(env)
        assert config.data_dir == expected and "data_dir" not in config.configured
        keys.append(config.ensure_secret_key())
        assert not (tmp_path / folder / ".eventbus").exists()
    assert keys[0] == keys[1]
    assert _mode(Path(expected)) == 0o700 and _mode(Path(expected) / "secret_key") == 0o600


def test_eventbus_data_dir_overrides_the_default(isolated_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = started({"EVENTBUS_DATA_DIR": "~/eventbus-data"})
    assert config.data_dir == str(tmp_path / "eventbus-data") and "data_dir" in config.configured
    assert started({"EVENTBUS_DATA_DIR": "./.eventbus"}).data_dir == "./.eventbus"
    assert started({"EVENTBUS_DATA_DIR": ""}).data_dir == Config().data_dir  # empty: the default


def test_configured_names_the_settings_that_were_given(isolated_env, tmp_path):
    (tmp_path / "eventbus.toml").write_text("async_mode = \"eventlet\"\n")
    config = started({"EVENTBUS_PORT": "6000"})
    assert {"port", "async_mode"} <= config.configured and "host" not in config.configured
