"""The connection options the driver builds for each auth method, checked by the real keystoneauth loaders.

No identity provider runs here, so OIDC is checked up to the plugin keystoneauth builds (its class and the
token it will send); no request is made.
"""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from marea.clouds.base import CloudErrorKind
from marea.clouds.openstack import OpenStackCloud, connection_options, gpus_from_extra_specs
from marea.config import OpenStackCloudSection

openstack_config = pytest.importorskip("openstack.config")
from keystoneauth1.identity import generic, v3  # noqa: E402


def plugin_for(section: OpenStackCloudSection):  # type: ignore[no-untyped-def]
    opts = connection_options(section)
    cloud = openstack_config.OpenStackConfig(load_yaml_config=False, load_envvars=False).get_one(**opts)
    return cloud.get_auth()


def test_password_auth_builds_a_password_plugin() -> None:
    s = OpenStackCloudSection(
        auth_url="https://keystone.example:5000/v3",
        username="alice",
        password=SecretStr("pw-123"),
        project_name="physics",
    )
    plugin = plugin_for(s)
    assert isinstance(plugin, generic.Password)  # "password" discovers the identity API version
    assert plugin._password == "pw-123"
    assert plugin._username == "alice"
    assert plugin._project_name == "physics"


def test_application_credential_is_chosen_when_its_id_is_set() -> None:
    s = OpenStackCloudSection(
        auth_url="https://keystone.example:5000/v3",
        application_credential_id="ac-id",
        application_credential_secret=SecretStr("ac-secret"),
    )
    assert connection_options(s)["auth_type"] == "v3applicationcredential"
    plugin = plugin_for(s)
    assert isinstance(plugin, v3.ApplicationCredential)
    assert plugin.auth_methods[0].application_credential_secret == "ac-secret"


def test_oidc_access_token_builds_the_oidc_plugin_with_idp_and_protocol() -> None:
    s = OpenStackCloudSection(
        auth_url="https://keystone.cloudveneto.example:5000/v3",
        auth_type="v3oidcaccesstoken",
        identity_provider="infn-cc",
        protocol="openid",
        access_token=SecretStr("eyJ.token.sig"),
        project_name="cms",
    )
    opts = connection_options(s)
    assert opts["auth_type"] == "v3oidcaccesstoken"
    assert opts["auth"]["identity_provider"] == "infn-cc"
    plugin = plugin_for(s)
    assert isinstance(plugin, v3.OidcAccessToken)
    assert plugin.identity_provider == "infn-cc"
    assert plugin.protocol == "openid"
    assert plugin.access_token == "eyJ.token.sig"
    assert plugin.project_name == "cms"


@pytest.mark.parametrize(
    ("section", "needs"),
    [
        (OpenStackCloudSection(auth_url="http://k/v3", username="u"), "password"),
        (OpenStackCloudSection(auth_url="http://k/v3", auth_type="v3oidcaccesstoken"), "identity_provider"),
        (OpenStackCloudSection(), "cloud"),
    ],
)
def test_missing_auth_settings_are_a_clear_auth_error(section: OpenStackCloudSection, needs: str) -> None:
    from marea.clouds.base import CloudError

    with pytest.raises(CloudError) as info:
        connection_options(section)
    assert info.value.kind is CloudErrorKind.AUTH
    assert needs in info.value.reason


def test_secrets_do_not_show_in_the_config_repr_or_in_scrubbed_errors(caplog: pytest.LogCaptureFixture) -> None:
    s = OpenStackCloudSection(
        auth_url="http://k/v3", username="u", password=SecretStr("hunter2-pw"), access_token=SecretStr("tok-9")
    )
    assert "hunter2-pw" not in repr(s) and "tok-9" not in repr(s)
    driver = OpenStackCloud(s)
    err = driver.error(RuntimeError("request with password hunter2-pw and token tok-9 failed"), "connect")
    assert "hunter2-pw" not in err.reason and "tok-9" not in err.reason
    assert "***" in err.reason
    driver.close()
    assert "hunter2-pw" not in caplog.text


@pytest.mark.parametrize(
    ("specs", "gpus"),
    [
        ({}, 0),
        ({"resources:VGPU": "1"}, 1),
        ({"resources:CUSTOM_NVIDIA_A100_GPU": "2", "hw:cpu_policy": "dedicated"}, 2),
        ({"pci_passthrough:alias": "a100:2,t4:1"}, 3),
        ({"pci_passthrough:alias": "v100"}, 1),
        ({"resources:VGPU": "not-a-number"}, 0),
    ],
)
def test_gpus_are_read_from_extra_specs(specs: dict[str, str], gpus: int) -> None:
    assert gpus_from_extra_specs(specs) == gpus


def test_logs_of_a_connection_error_hold_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = OpenStackCloudSection(
        auth_url="http://127.0.0.1:9/v3", username="u", password=SecretStr("pw-never-logged"), project_name="p"
    )
    driver = OpenStackCloud(s)
    from marea.clouds.base import CloudError

    with pytest.raises(CloudError) as info:
        driver.quota()
    assert info.value.kind in (CloudErrorKind.TIMEOUT, CloudErrorKind.AUTH, CloudErrorKind.OTHER)
    assert "pw-never-logged" not in info.value.reason
    assert "pw-never-logged" not in caplog.text
    driver.close()
