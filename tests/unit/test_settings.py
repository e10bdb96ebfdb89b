"""Settings: the seed's variable names, secrets masked, errors that never echo a value."""

import os
import subprocess
import sys

import pytest

from config.celery_config import celery_config, check_delivery_settings
from config.settings import Settings, load_settings
from core.errors import SettingsError


def test_seed_variables_are_read_by_their_exact_names(monkeypatch):
    monkeypatch.setenv("PRIMEHUB_FEATURE_CUSTOM_IMAGE", "true")
    monkeypatch.setenv("PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT", "docker.io")
    monkeypatch.setenv("PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME", "me")
    monkeypatch.setenv("PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX", "docker.io/me")
    monkeypatch.setenv("IMAGEBUILDER_INSECURE_REGISTRIES", "a.local:5000, b.local")
    settings = load_settings(_env_file=None)
    assert settings.feature_enabled and settings.registry_username == "me"
    assert settings.registry_password.get_secret_value() == "hunter2-secret"
    assert settings.insecure_registries == ["a.local:5000", "b.local"]
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings)


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("IMAGEBUILDER_BUILD_TIMEOUT_S=123\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().build_timeout_s == 123


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"IMAGEBUILDER_REDIS_URL": "http://:pw-in-url@host"}, "IMAGEBUILDER_REDIS_URL"),
     ({"IMAGEBUILDER_BUILD_TIMEOUT_S": "soon"}, "IMAGEBUILDER_BUILD_TIMEOUT_S"),
     ({"IMAGEBUILDER_PIP_INDEX_URL": "https://user:pw-in-url@mirror/simple"}, "IMAGEBUILDER_PIP_INDEX_URL"),
     ({"IMAGEBUILDER_BUILD_CA_BUNDLE": "/no/such/pw-in-url.pem"}, "IMAGEBUILDER_BUILD_CA_BUNDLE"),
     ({"IMAGEBUILDER_RESULT_EXPIRES_S": "60"}, "IMAGEBUILDER_RESULT_EXPIRES_S")],
)
def test_errors_name_the_variable_and_never_echo_the_value(env, variable):
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **env)
    assert variable in str(caught.value)
    assert "pw-in-url" not in str(caught.value) and "soon" not in str(caught.value)


def test_visibility_timeout_outlasts_the_hard_time_limit():
    settings = Settings(_env_file=None, IMAGEBUILDER_BUILD_TIMEOUT_S="7200")
    config = celery_config(settings)
    assert config["task_time_limit"] == settings.hard_time_limit_s > config["task_soft_time_limit"] > 7200
    assert config["broker_transport_options"]["visibility_timeout"] == settings.broker_visibility_timeout_s
    assert settings.broker_visibility_timeout_s > settings.hard_time_limit_s
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    check_delivery_settings(settings)


def test_a_visibility_timeout_shorter_than_a_build_refuses_to_start():
    settings = Settings(_env_file=None, IMAGEBUILDER_BUILD_TIMEOUT_S="3600", IMAGEBUILDER_VISIBILITY_TIMEOUT_S="3600")
    with pytest.raises(SettingsError, match="IMAGEBUILDER_VISIBILITY_TIMEOUT_S .3600 s. must exceed"):
        check_delivery_settings(settings)


def test_importing_the_producer_does_not_import_docker():
    code = "import sys, producer.cli, producer.client; print('docker' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert done.stdout.strip() == "False", done.stderr


def test_empty_values_mean_unset_as_compose_passes_them(monkeypatch):
    for name in ("IMAGEBUILDER_BUILD_CA_BUNDLE", "IMAGEBUILDER_METRICS_PORT", "IMAGEBUILDER_BUILD_TIMEOUT_S"):
        monkeypatch.setenv(name, "")
    settings = load_settings(_env_file=None)
    assert settings.build_ca_bundle is None and settings.metrics_port is None and settings.build_timeout_s == 3600
    assert Settings(_env_file=None, IMAGEBUILDER_BUILD_CA_BUNDLE="").build_ca_bundle is None
