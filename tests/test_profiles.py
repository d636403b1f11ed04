"""Batch profiles: the registry is the configuration's choice of systems, and every worker template uses only
the names its driver's join_variables(), the engine and `[worker.variables]` give.

Templates are rendered with the engine's own function (`render_user_data`, string.Template's safe_substitute,
which leaves an unknown `${...}` in place): a placeholder nobody fills would reach a real worker verbatim.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from marea import profiles
from marea.batch.factory import make_batch
from marea.config import BatchSection, ConfigError, HTCondorSection, SlurmSection, parse_config
from marea.engine.reconciler import render_user_data
from marea.templates import worker_template as local_template

PLACEHOLDER = re.compile(r"\$\{(MAREA_[A-Z0-9_]+)\}")


def filled(profile: profiles.BatchProfile) -> dict[str, str]:
    """Every name the profile declares, with a value (as the engine would give them)."""
    names = [
        *profiles.ENGINE_VARIABLES,
        *profile.join_variables,
        *(profiles.VARIABLE_PREFIX + n for n in profile.template_variables),
    ]
    return {name: f"value-of-{name.lower()}" for name in names}


def unfilled(text: str) -> list[str]:
    return sorted(set(PLACEHOLDER.findall(text)))


def templates(profile: profiles.BatchProfile) -> dict[str, str]:
    """The cloud-config worker template and the local-driver templates of a profile."""
    return {"cloud-config": profile.worker_template(), **{n: local_template(n) for n in profile.local_templates}}


@pytest.mark.parametrize("system", profiles.SYSTEMS)
def test_every_template_uses_only_the_names_its_profile_declares(system: str) -> None:
    profile = profiles.get(system)
    assert profile.name == system
    for name, text in templates(profile).items():
        assert PLACEHOLDER.search(text), f"{name}: no placeholder at all (the check would prove nothing)"
        left = unfilled(render_user_data(text, filled(profile)))
        assert left == [], f"{system} {name}: unfilled {left}"


@pytest.mark.parametrize("system", profiles.SYSTEMS)
def test_the_check_fails_when_a_join_variable_is_missing(system: str) -> None:
    """Without one of the driver's names, the rendered template keeps its placeholder: the check above can fail."""
    profile = profiles.get(system)
    text = profile.worker_template()
    used = [n for n in profile.join_variables if "${" + n + "}" in text]
    assert used, f"{system}: the worker template uses none of its driver's join variables"
    variables = filled(profile)
    del variables[used[0]]
    assert unfilled(render_user_data(text, variables)) == [used[0]]


def test_slurm_templates_share_the_feature_name_the_driver_gives() -> None:
    """One name for one setting: MAREA_SLURM_FEATURE in the cloud-config and the local template alike."""
    for text in templates(profiles.get("slurm")).values():
        assert "${MAREA_SLURM_FEATURE}" in text and "MAREA_VAR_SLURM_FEATURE" not in text


def test_the_slurm_driver_gives_exactly_the_declared_join_variables() -> None:
    driver = make_batch(parse_config({"batch": {"system": "slurm"}}))
    assert type(driver).__name__ == "SlurmBatch"
    assert sorted(driver.join_variables("w-1")) == sorted(profiles.get("slurm").join_variables)
    assert driver.join_variables("w-1")["MAREA_SLURM_FEATURE"] == SlurmSection().feature


def test_the_htcondor_driver_gives_exactly_the_declared_join_variables(tmp_path: Path) -> None:
    pytest.importorskip("htcondor2")
    from marea.batch.htcondor import HTCondorBatch

    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJIUzI1NiJ9.e30.sig\n")
    driver = HTCondorBatch(HTCondorSection(collector="10.0.0.5", token_file=str(token)))
    try:
        assert sorted(driver.join_variables("w-1")) == sorted(profiles.get("htcondor").join_variables)
    finally:
        driver.close()


def test_the_kubernetes_profile_declares_the_drivers_join_variables() -> None:
    """The names the kubernetes driver (marea.batch.kubernetes, another branch) gives each worker."""
    assert profiles.get("kubernetes").join_variables == ("MAREA_K8S_ENDPOINT", "MAREA_K8S_TOKEN", "MAREA_K8S_CA_HASH")
    pytest.importorskip("marea.batch.kubernetes")
    from marea.batch import kubernetes as driver_module

    assert hasattr(driver_module, "KubernetesBatch")


def test_the_configuration_allows_exactly_the_registered_systems() -> None:
    annotation = typing.get_type_hints(BatchSection)["system"]
    assert typing.get_args(annotation) == profiles.SYSTEMS
    with pytest.raises(ConfigError) as info:
        parse_config({"batch": {"system": "pbs"}}, "marea.toml")
    assert str(info.value) == "marea.toml: batch.system: Input should be 'slurm', 'htcondor' or 'kubernetes'"


def test_an_unknown_profile_names_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="unknown batch system 'pbs': one of slurm, htcondor, kubernetes"):
        profiles.get("pbs")


def test_the_engine_fills_the_names_profiles_call_its_own() -> None:
    """ENGINE_VARIABLES is what the reconciler puts in every worker's variables (engine/reconciler.py)."""
    source = (Path(profiles.__file__).parents[1] / "engine" / "reconciler.py").read_text()
    spec = source[source.index("def _spec(") :]
    spec = spec[: spec.index("**self.batch.join_variables")]
    assert sorted(re.findall(r'"(MAREA_[A-Z_]+)"', spec)) == sorted(profiles.ENGINE_VARIABLES)


@pytest.mark.parametrize("system", profiles.SYSTEMS)
def test_ports_and_addons_are_declared(system: str) -> None:
    profile = profiles.get(system)
    assert profile.master_ports and profile.worker_ports
    assert "monitoring" in profile.addons
    assert all(0 < p < 65536 for p in (*profile.master_ports, *profile.worker_ports, *profile.master_udp_ports))
