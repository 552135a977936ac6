"""Configuration: precedence, environment overrides, and precise refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from edge.settings import SettingsError, find_config, load_settings


def test_built_in_defaults_work_on_a_laptop() -> None:
    settings = load_settings(None, env={})
    assert settings.broker.mode == "managed"
    assert settings.state_dir == Path(".edge-state")
    assert settings.broker.host == "127.0.0.1"
    assert settings.client_id == "edge-hub-store-001"


def test_precedence_flag_then_env_then_system_file(tmp_path: Path) -> None:
    flag, env = tmp_path / "flag.toml", tmp_path / "env.toml"
    assert find_config(flag, {"EDGE_CONFIG": str(env)}) == flag
    assert find_config(None, {"EDGE_CONFIG": str(env)}) == env


def test_environment_overrides_file_with_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('store_id = "s-file"\n[http]\nport = 9000\n')
    settings = load_settings(
        path,
        env={
            "EDGE__STORE_ID": "store-042",  # a bare string needs no quotes
            "EDGE__HTTP__PORT": "9100",
            "EDGE__BROKER__MODE": '"external"',
            "EDGE__SHUTDOWN__GRACE_S": "2.5",
            "UNRELATED": "x",
        },
    )
    assert settings.store_id == "store-042"
    assert settings.http.port == 9100
    assert settings.broker.mode == "external"
    assert settings.shutdown.grace_s == 2.5


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[broker]\nport = "high"\n', "broker.port", "Expected `int`, got `str`"),
        ("[broker]\nprot = 1\n", "broker.prot", "unknown key"),
        ('[broker]\nmode = "cloud"\n', "broker.mode", "Invalid enum value 'cloud'"),
        ("[broker]\nport = 70000\n", "broker.port", "not a TCP port"),
        ('store_id = "a/b"\n', "store_id", "letters, digits"),
        ("[bus]\nreconnect_min_s = 5\nreconnect_max_s = 1\n", "bus.reconnect_max_s", ">="),
        ("[broker]\nport = 1\nlan_port = 1\n", "broker.lan_port", "must differ"),
        ("[bus]\nmax_request_bytes = 10\n", "bus.max_request_bytes", "between"),
        (
            '[outbox]\nconnector = "netsuite"\n[uplink.netsuite]\naccount_id = "1"\n'
            'auth = "tba"\nconsumer_key = "k"\nconsumer_secret = "s"\ntoken_id = "t"\n'
            'token_secret = "ts"\nbatch = true\nbatch_size = 101\n',
            "uplink.netsuite.batch_size",
            "2 to 100",
        ),
    ],
)
def test_bad_config_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path, env={})
    assert caught.value.source == str(path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_bad_env_override_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, env={"EDGE__HTTP__PORT": "eighty"})
    assert caught.value.key == "http.port"


def test_unparseable_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("store_id = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad, env={})
    with pytest.raises(SettingsError, match="file not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('store_id = "s9"\n')
    bad.write_text("[http]\nport = -1\n")
    assert main(["config", "check", str(good)]) == 0
    assert "OK (store s9" in capsys.readouterr().out
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: http.port: -1 is not a TCP port" in err
