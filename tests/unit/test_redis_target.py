"""Where Redis is, as each client takes it: one server, or the master Redis Sentinel names (config/redis_target.py)."""

import pytest
from kombu import Connection

from config.celery_config import celery_config
from config.settings import load_settings
from core.errors import SettingsError
from core.stores.broker import FailoverSentinelTransport
from worker.beat import create_beat_app

SENTINELS = "10.0.0.1:26379, [fd00::2]:26380,sentinel-3:26381"
PASSWORD, SENTINEL_PASSWORD = "redis-pw-4a7b", "sentinel-pw-9c2d"


def sentinel_settings(url: str = f"redis://:{PASSWORD}@ignored:6379/3", **more: str):
    return load_settings(_env_file=None, IMAGEBUILDER_REDIS_URL=url, IMAGEBUILDER_REDIS_SENTINELS=SENTINELS,
                         IMAGEBUILDER_REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD, **more)


def test_a_plain_url_is_used_as_it_is_by_every_client():
    # Given only IMAGEBUILDER_REDIS_URL
    settings = load_settings(_env_file=None, IMAGEBUILDER_REDIS_URL="redis://:pw@redis.local:6380/2")
    target = settings.redis_target
    # Then the broker, the backend and redbeat take that URL, with no Sentinel options
    config = celery_config(settings)
    assert not target.sentinel
    assert config["broker_url"] == config["result_backend"] == "redis://:pw@redis.local:6380/2"
    assert set(config["broker_transport_options"]) == {"visibility_timeout"}
    assert target.redbeat_options() == {"redbeat_redis_url": "redis://:pw@redis.local:6380/2"}


def test_sentinels_name_the_master_for_the_broker_the_backend_and_redbeat():
    # Given sentinels, the master's name, the sentinels' password and a URL with the master's password and db
    settings = sentinel_settings(IMAGEBUILDER_REDIS_MASTER_NAME="builds-master")
    target = settings.redis_target
    # Then the broker and the backend get one sentinel:// URL per sentinel (IPv6 in brackets), the master's
    # password and database in each, and the master's name and the sentinels' password as transport options
    config = celery_config(settings)
    assert config["broker_url"] == config["result_backend"] == (
        f"sentinel://:{PASSWORD}@10.0.0.1:26379/3;sentinel://:{PASSWORD}@[fd00::2]:26380/3;"
        f"sentinel://:{PASSWORD}@sentinel-3:26381/3")
    options = config["broker_transport_options"]
    assert options["master_name"] == "builds-master"
    assert options["sentinel_kwargs"]["password"] == SENTINEL_PASSWORD
    assert config["result_backend_transport_options"] == options
    # And redis-py clients and redbeat take the same sentinels, master, database and passwords
    assert target.server_options() == {"db": 3, "password": PASSWORD}
    beat = create_beat_app(settings).conf
    assert beat.redbeat_redis_url == "redis-sentinel://"
    assert beat.redbeat_redis_options["sentinels"] == [("10.0.0.1", 26379), ("fd00::2", 26380), ("sentinel-3", 26381)]
    assert (beat.redbeat_redis_options["service_name"], beat.redbeat_redis_options["db"]) == ("builds-master", 3)


def test_tls_from_rediss_reaches_the_master_and_the_sentinels_alike():
    # Given a rediss:// URL with a CA file
    target = sentinel_settings(f"rediss://:{PASSWORD}@x/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required").redis_target
    # Then both the master's and the sentinels' connections use TLS with that CA
    tls = {"ssl": True, "ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}
    assert target.server_options().items() >= tls.items()
    assert target.sentinel_options().items() >= tls.items()
    config = celery_config(sentinel_settings(f"rediss://:{PASSWORD}@x/0?ssl_ca_certs=/etc/ca.pem"))
    assert config["broker_use_ssl"] == config["redis_backend_use_ssl"] == {"ssl_ca_certs": "/etc/ca.pem"}


def test_no_password_is_in_the_targets_repr():
    target = sentinel_settings().redis_target
    assert PASSWORD not in repr(target) and SENTINEL_PASSWORD not in repr(target)


@pytest.mark.parametrize("variables, says", [
    ({"IMAGEBUILDER_REDIS_SENTINELS": "10.0.0.1"}, "IMAGEBUILDER_REDIS_SENTINELS: each sentinel must be host:port"),
    ({"IMAGEBUILDER_REDIS_SENTINELS": "a:1,user@b:2"}, "IMAGEBUILDER_REDIS_SENTINELS: each sentinel must be"),
    ({"IMAGEBUILDER_REDIS_SENTINELS": "a:1", "IMAGEBUILDER_REDIS_URL": "unix:///run/redis.sock"},
     "IMAGEBUILDER_REDIS_URL: with IMAGEBUILDER_REDIS_SENTINELS, must be a redis:// or rediss:// URL"),
    ({"IMAGEBUILDER_REDIS_MASTER_NAME": "a b"}, "IMAGEBUILDER_REDIS_MASTER_NAME: String should match pattern"),
    ({"IMAGEBUILDER_REDIS_WAIT_REPLICAS": "-1"}, "IMAGEBUILDER_REDIS_WAIT_REPLICAS: Input should be greater"),
    ({"IMAGEBUILDER_REDIS_WAIT_TIMEOUT_MS": "0"}, "IMAGEBUILDER_REDIS_WAIT_TIMEOUT_MS: Input should be greater"),
])
def test_a_bad_redis_setting_is_named_with_its_rule(variables, says):
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **variables)
    assert says in str(raised.value)


def test_every_sentinel_url_kombu_moves_on_to_takes_the_transport_that_rides_out_a_failover():
    # Given the broker's connection with its three sentinel:// URLs, as the app makes it
    connection = create_beat_app(sentinel_settings()).connection_for_read()
    # When kombu moves on to the next sentinel's URL, as it does when one does not answer
    first = type(connection.transport)
    connection.switch(connection.alt[1])
    # Then the transport is still the one made to ride out a failover (core/stores/broker.py)
    assert first is type(connection.transport) is FailoverSentinelTransport
    assert isinstance(connection, Connection)
