"""The Azure deployment (azure.yaml + infra/), checked offline: Bicep parsed with pycep, checkov, the azd hooks.

Nothing here talks to Azure. The Bicep files are parsed (not compiled: there is no Bicep CLI here), so these
tests check structure and wiring: resource types, role assignments, Event Grid filter, ingress, probes, scale
rule, and that every setting of the interface's Environment table reaches the container app.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import yaml
from pycep import BicepParser

from . import REPO

INFRA = REPO / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role definition ids.
COGNITIVE_SERVICES_USER = "a97b65f3-24c7-4388-baec-2e87135dc908"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
COMMUNICATION_AND_EMAIL_SERVICE_OWNER = "09976791-48a7-449e-bb21-39d1a415f350"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
USER_ACCESS_ADMINISTRATOR = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"

# The interface's Environment table (../shared/interface.md), kept here for a clone without shared/ beside it.
INTERFACE_ENV = {
    "AZURE_VOICELIVE_ENDPOINT", "AZURE_VOICELIVE_API_KEY", "AZURE_VOICELIVE_MODEL", "AZURE_VOICELIVE_AGENT_NAME",
    "AZURE_VOICELIVE_PROJECT_NAME", "ACS_CONNECTION_STRING", "ACS_ENDPOINT", "CALLBOT_PUBLIC_URL",
    "CALLBOT_INSTRUCTIONS", "CALLBOT_INSTRUCTIONS_FILE", "CALLBOT_GREETING", "CALLBOT_VOICE",
    "CALLBOT_TURN_DETECTION", "CALLBOT_NOISE_REDUCTION", "CALLBOT_ECHO_CANCELLATION", "CALLBOT_MEDIA_FORMAT",
    "CALLBOT_RECORDINGS_DIR", "CALLBOT_MAX_CALL_SECONDS", "CALLBOT_MAX_CONCURRENT_CALLS", "LOG_LEVEL",
    "ACS_RESOURCE_ID", "CALLBOT_ACS_JWKS_URL", "CALLBOT_ACS_ISSUER", "CALLBOT_SIGNING_KEY",
    "CALLBOT_WEBHOOK_SECRET", "CALLBOT_DRAIN_SECONDS",
}
# Set by the deployment itself, beyond the interface's table.
DEPLOYMENT_ENV = {"AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
# Deliberately absent in Azure; containerapp.bicep must say so (and why) next to the settings.
NOT_IN_AZURE = {
    "AZURE_VOICELIVE_API_KEY",  # managed identity; the AI account has key auth disabled
    "ACS_CONNECTION_STRING",  # managed identity against ACS_ENDPOINT
    "CALLBOT_INSTRUCTIONS_FILE",  # CALLBOT_INSTRUCTIONS carries the prompt
    "CALLBOT_RECORDINGS_DIR",  # off: callers' voices, ephemeral storage
    "CALLBOT_ACS_JWKS_URL",  # the defaults are Microsoft's
    "CALLBOT_ACS_ISSUER",
}
SECRET_ENV = {"CALLBOT_SIGNING_KEY", "CALLBOT_WEBHOOK_SECRET"}


# ---- helpers -------------------------------------------------------------------------------------------------


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def bicep(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = dict(_parser().parse(file_path=path))
    return doc


def resources(path: Path) -> dict[str, dict[str, Any]]:
    """symbol -> {type, config, ...} for the resources declared (not `existing`) in one file."""
    return {k: v for k, v in bicep(path).get("resources", {}).items() if not v.get("existing")}


def all_resources() -> list[tuple[Path, str, dict[str, Any]]]:
    return [(path, symbol, res) for path in BICEP_FILES for symbol, res in resources(path).items()]


def of_type(type_: str) -> list[tuple[Path, str, dict[str, Any]]]:
    found = [r for r in all_resources() if r[2]["type"] == type_]
    assert found, f"no {type_} resource in infra/"
    return found


def resolve(path: Path, value: Any) -> Any:
    """A variable's value or a parameter's default in place of its name (one file, a few levels deep).

    A parameter without a default stays its name."""
    doc = bicep(path)
    for _ in range(5):
        if not isinstance(value, str):
            return value
        if value in doc.get("variables", {}):
            value = doc["variables"][value]["value"]
        elif value in doc.get("parameters", {}) and doc["parameters"][value].get("default") is not None:
            value = doc["parameters"][value]["default"]
        else:
            return value
    return value


def decorators(param: dict[str, Any]) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in param.get("decorators", [])}


def identifiers(expr: Any) -> set[str]:
    """Every bare string inside a parsed expression (identifiers and literals alike; not function names)."""
    if isinstance(expr, str):
        return {expr}
    if isinstance(expr, dict):
        values = [v for k, v in expr.items() if k != "type"]  # {"function": {"type": "concat", ...}}
        return set().union(*(identifiers(v) for v in values)) if values else set()
    if isinstance(expr, list):
        return set().union(*(identifiers(v) for v in expr)) if expr else set()
    return set()


def container_app() -> tuple[Path, dict[str, Any]]:
    [(path, _symbol, app)] = of_type("Microsoft.App/containerApps")
    return path, app["config"]


def container_env() -> dict[str, dict[str, Any]]:
    """Environment variable name -> its entry ({name, value} or {name, secretRef}) in the app's container."""
    path, app = container_app()
    [container] = app["properties"]["template"]["containers"]
    env = container["env"]
    entries: list[Any] = []
    for part in identifiers(env) if isinstance(env, dict) else [env]:
        value = resolve(path, part)
        if isinstance(value, list):
            entries += value
    assert entries, "the container has no environment"
    return {e["name"]: e for e in entries}


def interface_env() -> set[str]:
    """Variable names of the interface's Environment table, or the checked-in copy when shared/ is absent."""
    interface = REPO.parent / "shared" / "interface.md"
    if not interface.is_file():
        return set(INTERFACE_ENV)
    text = interface.read_text(encoding="utf-8")
    section = text.split("## Environment", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            names.update(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", line))
    assert names, "no variable found in the interface's Environment table"
    return names


# ---- every file parses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    doc = bicep(path)
    assert doc.get("resources") or doc.get("modules")


def test_deployment_creates_every_resource_the_bot_needs() -> None:
    types = {res["type"] for _path, _symbol, res in all_resources()}
    assert {
        "Microsoft.Resources/resourceGroups",
        "Microsoft.Communication/communicationServices",
        "Microsoft.CognitiveServices/accounts",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.KeyVault/vaults",
        "Microsoft.KeyVault/vaults/secrets",
        "Microsoft.ContainerRegistry/registries",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.App/managedEnvironments",
        "Microsoft.App/containerApps",
        "Microsoft.EventGrid/systemTopics",
        "Microsoft.EventGrid/systemTopics/eventSubscriptions",
    } <= types


def test_modules_get_exactly_the_parameters_they_declare() -> None:
    for path in BICEP_FILES:
        for symbol, module in bicep(path).get("modules", {}).items():
            target = (path.parent / module["detail"]["path"]).resolve()
            assert target.is_file(), f"{path.name}: module {symbol} points at a missing {target}"
            declared = bicep(target).get("parameters", {})
            config = module["config"].get("config", module["config"])  # a conditional module: {condition, config}
            passed = set(config.get("params", {}))
            required = {name for name, p in declared.items() if p.get("default") is None}
            assert passed <= set(declared), f"{symbol}: unknown params {passed - set(declared)}"
            assert required <= passed, f"{symbol}: required params not passed {required - passed}"


# ---- the resources -------------------------------------------------------------------------------------------


def test_voice_live_account_is_ai_services_with_key_auth_disabled() -> None:
    [(path, _symbol, account)] = of_type("Microsoft.CognitiveServices/accounts")
    config = account["config"]
    assert config["kind"] == "AIServices"
    assert config["properties"]["disableLocalAuth"] is True
    assert config["properties"]["customSubDomainName"]  # Entra auth needs a custom subdomain


def test_registry_has_the_admin_user_disabled() -> None:
    [(_path, _symbol, registry)] = of_type("Microsoft.ContainerRegistry/registries")
    assert registry["config"]["properties"]["adminUserEnabled"] is False


def test_key_vault_uses_rbac_and_holds_both_shared_secrets_and_the_optional_ones_only_when_set() -> None:
    [(_path, _symbol, vault)] = of_type("Microsoft.KeyVault/vaults")
    assert vault["config"]["properties"]["enableRbacAuthorization"] is True
    always = {res["config"]["name"] for _p, _s, res in of_type("Microsoft.KeyVault/vaults/secrets")
              if "condition" not in res["config"]}
    assert always == {"callbot-signing-key", "callbot-webhook-secret"}
    conditional = {res["config"]["config"]["name"]: res["config"]["condition"]
                   for _p, _s, res in of_type("Microsoft.KeyVault/vaults/secrets") if "condition" in res["config"]}
    assert set(conditional) == {"callbot-web-phone-key", "twilio-account-sid", "twilio-auth-token"}
    assert conditional["callbot-web-phone-key"]["operator"]["type"] == "not", "created only when a key is given"
    assert conditional["twilio-account-sid"] == conditional["twilio-auth-token"] == "twilioOn"


def test_app_identity_gets_least_privilege_roles_on_each_target_resource() -> None:
    granted: dict[str, set[str]] = {}
    for path, _symbol, assignment in of_type("Microsoft.Authorization/roleAssignments"):
        config = assignment["config"]
        properties = config["properties"]
        role_expr = properties["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role = resolve(path, role_expr)
        scope = resources(path)[config["scope"]]["type"]  # scoped to one resource of this module
        granted.setdefault(role, set()).add(scope)
        assert properties["principalType"] == "ServicePrincipal"
        assert role not in {OWNER, USER_ACCESS_ADMINISTRATOR}
    assert granted.pop(COGNITIVE_SERVICES_USER) == {"Microsoft.CognitiveServices/accounts"}
    assert granted.pop(ACR_PULL) == {"Microsoft.ContainerRegistry/registries"}
    assert granted.pop(KEY_VAULT_SECRETS_USER) == {"Microsoft.KeyVault/vaults"}
    # recordings (when on): blobs of the one container, not the account
    assert granted.pop(STORAGE_BLOB_DATA_CONTRIBUTOR) == {"Microsoft.Storage/storageAccounts/blobServices/containers"}
    # ACS: the narrow built-in role by default (Contributor only as an explicit, documented override).
    assert granted.pop(COMMUNICATION_AND_EMAIL_SERVICE_OWNER) == {"Microsoft.Communication/communicationServices"}
    assert not granted, f"unexpected role assignments: {granted}"
    main = bicep(INFRA / "main.bicep")["parameters"]["acsRoleDefinitionId"]
    assert main["default"] == COMMUNICATION_AND_EMAIL_SERVICE_OWNER
    assert set(decorators(main)["allowed"]) == {COMMUNICATION_AND_EMAIL_SERVICE_OWNER, CONTRIBUTOR}


def test_every_role_goes_to_the_apps_user_assigned_identity() -> None:
    main = INFRA / "main.bicep"
    for symbol in ("registry", "keyVault", "communication", "ai", "storage"):
        config = bicep(main)["modules"][symbol]["config"]
        params = config.get("config", config)["params"]
        principal = next(v for k, v in params.items() if k.endswith("rincipalId"))
        assert {"identity", "outputs", "principalId"} <= identifiers(principal), symbol
    _path, app = container_app()
    assert app["identity"]["type"] == "UserAssigned"


def test_incoming_call_subscription_filters_incoming_calls_to_the_webhook() -> None:
    [(path, _symbol, topic)] = of_type("Microsoft.EventGrid/systemTopics")
    assert path.name == "eventgrid.bicep"  # deployed by the postdeploy hook, once the app can validate it
    assert topic["config"]["properties"]["topicType"] == "Microsoft.Communication.CommunicationServices"
    assert topic["config"]["location"] == "global"
    [(_path, _symbol, subscription)] = of_type("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    properties = subscription["config"]["properties"]
    assert properties["filter"]["includedEventTypes"] == ["Microsoft.Communication.IncomingCall"]
    destination = properties["destination"]
    assert destination["endpointType"] == "WebHook"
    assert destination["properties"]["endpointUrl"] == (
        "https://${appFqdn}/api/incoming-call?secret=${webhookSecret}"
    )
    assert "secure" in decorators(bicep(path)["parameters"]["webhookSecret"])


def test_ingress_is_public_https_on_8000_with_a_websocket_capable_transport() -> None:
    path, app = container_app()
    ingress = app["properties"]["configuration"]["ingress"]
    assert ingress["external"] is True
    assert resolve(path, ingress["targetPort"]) == 8000
    assert ingress["transport"] in {"http", "auto"}  # WebSocket upgrades need HTTP/1.1 (http or auto)
    assert ingress["allowInsecure"] is False


def test_probes_use_healthz_for_liveness_and_readyz_for_readiness() -> None:
    path, app = container_app()
    [container] = app["properties"]["template"]["containers"]
    probes = {p["type"]: p["httpGet"] for p in container["probes"]}
    assert probes["Liveness"]["path"] == "/healthz"
    assert probes["Readiness"]["path"] == "/readyz"
    assert all(resolve(path, p["port"]) == 8000 for p in probes.values())


def test_scale_rule_counts_concurrent_calls_from_the_bench_figure() -> None:
    path, app = container_app()
    scale = app["properties"]["template"]["scale"]
    [rule] = scale["rules"]
    assert identifiers(rule["http"]["metadata"]["concurrentRequests"]) == {"callsPerReplica"}
    main = bicep(INFRA / "main.bicep")["parameters"]
    assert main["callsPerReplica"]["default"] == 170
    assert main["minReplicas"]["default"] >= 1 and decorators(main["minReplicas"])["min_value"] >= 1
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    before = text[: text.index("param callsPerReplica")].splitlines()[-8:]
    assert any(line.lstrip().startswith("//") and "`callbot bench`" in line for line in before)
    assert main["maxConcurrentCalls"]["default"] >= main["callsPerReplica"]["default"]


def test_termination_grace_period_outlasts_the_drain() -> None:
    _path, app = container_app()
    grace = app["properties"]["template"]["terminationGracePeriodSeconds"]
    assert grace["operator"]["type"] == "add"
    operands = grace["operator"]["operands"]
    assert operands["operand_1"] == "drainSeconds" and operands["operand_2"] > 5  # uvicorn waits drain + 5 s
    drain = bicep(INFRA / "main.bicep")["parameters"]["drainSeconds"]
    assert decorators(drain)["max_value"] + operands["operand_2"] <= 600  # Container Apps' ceiling


# ---- app settings --------------------------------------------------------------------------------------------


def test_every_interface_setting_reaches_the_container_app() -> None:
    env = container_env()
    expected = (interface_env() | INTERFACE_ENV | DEPLOYMENT_ENV) - NOT_IN_AZURE
    assert expected <= set(env), f"missing from the container app: {sorted(expected - set(env))}"
    assert not NOT_IN_AZURE & set(env)
    # The omissions are decided and stated where the settings are.
    source = container_app()[0].read_text(encoding="utf-8")
    for name in NOT_IN_AZURE:
        assert name in source, f"containerapp.bicep should say why {name} is not set"


def test_shared_secrets_come_from_key_vault_through_the_app_identity() -> None:
    path, app = container_app()
    env = container_env()
    listed = app["properties"]["configuration"]["secrets"]
    if isinstance(listed, dict):  # concat(the fixed secrets, the web phone's key, Twilio's, each when it is on)
        args = listed["function"]["parameters"]
        assert listed["function"]["type"] == "concat" and args["arg_2"] == "webPhoneSecrets"
        assert args["arg_3"] == "twilioSecrets"
        listed = args["arg_1"]
    secrets = {resolve(path, s["name"]): s for s in listed}
    for name, secret_name in (("CALLBOT_SIGNING_KEY", "callbot-signing-key"),
                              ("CALLBOT_WEBHOOK_SECRET", "callbot-webhook-secret")):
        assert "value" not in env[name]
        assert resolve(path, env[name]["secretRef"]) == secret_name
        secret = secrets[secret_name]
        assert "value" not in secret and secret["keyVaultUrl"] and secret["identity"] == "identityId"
    assert resolve(path, env["AZURE_CLIENT_ID"]["value"]) == "identityClientId"


def test_operator_settings_can_be_set_with_azd_env_set() -> None:
    """`azd env set NAME value` + `azd provision` changes NAME in the container (main.parameters.json maps it)."""
    computed = {"AZURE_VOICELIVE_ENDPOINT", "ACS_ENDPOINT", "ACS_RESOURCE_ID", "AZURE_CLIENT_ID",
                "APPLICATIONINSIGHTS_CONNECTION_STRING",
                "CALLBOT_WEB_PHONE"}  # on exactly when CALLBOT_WEB_PHONE_KEY is given (see the web phone test)
    path, _app = container_app()
    main = INFRA / "main.bicep"
    module_params = bicep(main)["modules"]["app"]["config"]["params"]
    azd = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    settable = {k: v["value"] for k, v in azd.items()}
    main_params = set(bicep(main)["parameters"])
    for name, entry in container_env().items():
        if name in computed:
            continue
        if name in SECRET_ENV:  # the secrets reach main.bicep directly
            assert settable[{"CALLBOT_SIGNING_KEY": "signingKey", "CALLBOT_WEBHOOK_SECRET": "webhookSecret"}[name]] \
                == "${" + name + "}"
            continue
        used = identifiers(entry["value"])
        for var in used & set(bicep(path).get("variables", {})):
            used |= identifiers(bicep(path)["variables"][var]["value"])
        module_inputs = used & set(module_params)
        assert module_inputs, f"{name} is not driven by a parameter of the app module"
        sources = set().union(*(identifiers(module_params[p]) for p in module_inputs)) & main_params
        assert sources, f"{name} is not driven by a main.bicep parameter"
        assert any(settable.get(p, "").startswith("${" + name) for p in sources), (
            f"{name}: main.parameters.json does not map ${{{name}}} to {sources}"
        )


def test_azd_parameters_file_matches_main_bicep() -> None:
    declared = bicep(INFRA / "main.bicep")["parameters"]
    azd = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(azd) <= set(declared)
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= set(azd)


# ---- azure.yaml and the hooks --------------------------------------------------------------------------------


def test_azure_yaml_builds_remotely_and_runs_the_hooks() -> None:
    project = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    assert project["infra"]["provider"] == "bicep" and project["infra"]["path"] == "infra"
    service = project["services"]["callbot"]
    assert service["host"] == "containerapp"
    assert service["docker"]["remoteBuild"] is True
    assert (REPO / service["project"] / service["docker"]["path"]).resolve() == (REPO / "Dockerfile").resolve()
    for hook in ("preprovision", "postdeploy"):
        script = REPO / project["hooks"][hook]["run"]
        assert script.is_file(), script
    # The app carries the tag azd finds it by.
    _path, app = container_app()
    assert "'azd-service-name'" in str(app["tags"]) and "callbot" in str(app["tags"])


def _stub(bin_dir: Path, name: str, body: str) -> None:
    script = bin_dir / name
    script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    script.chmod(0o755)


@pytest.fixture
def stub_path(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return bin_dir


def _run_hook(name: str, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "HOME": str(bin_dir.parent)}
    return subprocess.run(["sh", str(INFRA / "hooks" / name)], env={**base, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_preprovision_generates_url_safe_secrets_once(stub_path: Path) -> None:
    log = stub_path.parent / "azd.log"
    _stub(stub_path, "azd", f'printf "%s\\n" "$*" >> "{log}"\n')  # records `azd env set NAME VALUE`
    result = _run_hook("preprovision.sh", stub_path)
    assert result.returncode == 0, result.stderr
    calls = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    assert {c[2] for c in calls} == {"CALLBOT_SIGNING_KEY", "CALLBOT_WEBHOOK_SECRET"}
    values = [c[3] for c in calls]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", v) for v in values) and values[0] != values[1]
    assert not any(v in result.stdout + result.stderr for v in values)  # never printed
    log.unlink()
    kept = _run_hook("preprovision.sh", stub_path, CALLBOT_SIGNING_KEY="k" * 40, CALLBOT_WEBHOOK_SECRET="w" * 40)
    assert kept.returncode == 0 and not log.exists()  # already set: nothing regenerated
    bad = _run_hook("preprovision.sh", stub_path, CALLBOT_SIGNING_KEY="k" * 40, CALLBOT_WEBHOOK_SECRET="a&b" * 20)
    assert bad.returncode != 0 and "URL-safe" in bad.stderr


def test_postdeploy_waits_for_readiness_then_deploys_eventgrid_with_a_private_secret(stub_path: Path) -> None:
    log = stub_path.parent / "calls.log"
    captured = stub_path.parent / "params.json"
    _stub(stub_path, "curl", f'printf "curl %s\\n" "$*" >> "{log}"\nprintf 200\n')
    _stub(stub_path, "az", (
        f'printf "az %s\\n" "$*" >> "{log}"\n'
        'for a in "$@"; do case "$a" in @*) f="${a#@}";; esac; done\n'
        f'cp "$f" "{captured}"\nstat -c %a "$f" >> "{log}"\n'
    ))
    secret = "s3cret-" + "x" * 36
    scratch = stub_path.parent / "tmp"
    scratch.mkdir()
    result = _run_hook(
        "postdeploy.sh", stub_path, AZURE_RESOURCE_GROUP="rg-dev", AZURE_COMMUNICATION_NAME="acs-abc",
        SERVICE_CALLBOT_FQDN="ca-callbot-abc.example.azurecontainerapps.io", CALLBOT_WEBHOOK_SECRET=secret,
        TMPDIR=str(scratch),
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text(encoding="utf-8")
    assert "https://ca-callbot-abc.example.azurecontainerapps.io/readyz" in calls.splitlines()[0]
    assert "deployment group create --resource-group rg-dev" in calls
    assert "eventgrid.bicep" in calls
    assert secret not in calls and secret not in result.stdout + result.stderr  # not on any command line
    assert "600" in calls.splitlines()  # the parameters file was private
    params = json.loads(captured.read_text(encoding="utf-8"))["parameters"]
    assert params == {"acsName": {"value": "acs-abc"},
                      "appFqdn": {"value": "ca-callbot-abc.example.azurecontainerapps.io"},
                      "webhookSecret": {"value": secret}}
    assert not list(scratch.iterdir())  # the parameters file is removed on exit


def test_postdeploy_gives_up_when_the_app_never_gets_ready(stub_path: Path) -> None:
    _stub(stub_path, "curl", "printf 503\n")
    _stub(stub_path, "az", "echo az must not run >&2; exit 1\n")
    result = _run_hook(
        "postdeploy.sh", stub_path, AZURE_RESOURCE_GROUP="rg-dev", AZURE_COMMUNICATION_NAME="acs-abc",
        SERVICE_CALLBOT_FQDN="ca-callbot-abc.example.azurecontainerapps.io", CALLBOT_WEBHOOK_SECRET="w" * 40,
        CALLBOT_READY_TIMEOUT="0",
    )
    assert result.returncode == 1
    assert "did not become ready" in result.stderr and "az must not run" not in result.stderr


def test_postdeploy_refuses_without_the_azd_outputs(stub_path: Path) -> None:
    result = _run_hook("postdeploy.sh", stub_path)
    assert result.returncode != 0 and "AZURE_RESOURCE_GROUP" in result.stderr


# ---- checkov -------------------------------------------------------------------------------------------------


def find_checkov() -> str | None:
    """CALLBOT_CHECKOV (the executable or its venv), else next to this interpreter, else on PATH."""
    configured = os.environ.get("CALLBOT_CHECKOV")
    if configured:
        path = Path(configured)
        return str(path / "bin" / "checkov" if path.is_dir() else path)
    beside = Path(sys.executable).parent / "checkov"
    if beside.exists():
        return str(beside)
    return shutil.which("checkov")


def test_every_checkov_suppression_gives_a_reason() -> None:
    files = [*BICEP_FILES, REPO / "Dockerfile"]
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                assert re.search(r"checkov:skip=CKV2?_[A-Z]+_\d+: \S.{20,}", line), f"{path.name}: {line.strip()}"


@pytest.mark.slow
def test_checkov_finds_no_failed_checks() -> None:
    checkov = find_checkov()
    if checkov is None:
        message = ("checkov not found: run `infra/checks/install-checkov.sh DIR` and set CALLBOT_CHECKOV=DIR "
                   "(checkov pins packages that clash with the project's, so it lives in a venv of its own)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    targets = [REPO / "Dockerfile", REPO / "azure.yaml", *BICEP_FILES,
               *sorted((INFRA / "hooks").glob("*.sh"))]
    # Offline: no Prisma Cloud download, no PyPI update check, and only the frameworks that apply (others probe
    # tools such as kubectl at start-up).
    cmd = [checkov, "--skip-download", "--framework", "bicep", "dockerfile", "secrets", "--output", "json",
           "--compact"]
    for target in targets:
        cmd += ["--file", str(target)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"})
    assert run.stdout.strip(), f"checkov printed nothing:\n{run.stderr[-3000:]}"
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    assert {"bicep", "dockerfile"} <= set(by_type), f"checkov scanned only {sorted(by_type)}"
    failed = [f"{c['check_id']} {c['resource']} {c['file_path']}" for r in reports
              for c in r["results"].get("failed_checks", [])]
    assert not failed, "checkov failed checks (fix, or skip with a reason):\n" + "\n".join(failed)
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
    assert by_type["bicep"]["summary"]["passed"] > 0 and by_type["dockerfile"]["summary"]["passed"] > 0


def test_the_web_phone_is_off_unless_its_key_is_given_and_the_key_comes_from_key_vault() -> None:
    path, _app = container_app()
    doc = bicep(path)
    assert doc["parameters"]["webPhoneKeySecretUri"]["default"] == "", "the module's default: off"
    on = doc["variables"]["webPhoneOn"]["value"]["operator"]
    assert on["type"] == "not" and on["operands"]["bool_value"]["function"] == {
        "type": "empty", "parameters": {"item_to_test": "webPhoneKeySecretUri"}}
    switch = container_env()["CALLBOT_WEB_PHONE"]["value"]["operator"]["operands"]
    assert switch == {"condition": "webPhoneOn", "true_value": "on", "false_value": "off"}
    key_env = doc["variables"]["webPhoneEnv"]["value"]["operator"]["operands"]
    assert key_env["condition"] == "webPhoneOn" and key_env["false_value"] == []
    assert key_env["true_value"] == [{"name": "CALLBOT_WEB_PHONE_KEY", "secretRef": "webPhoneKeyRef"}], "no value"
    azd = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert azd["webPhoneKey"]["value"] == "${CALLBOT_WEB_PHONE_KEY=}", "unset in azd: empty, so off"
    main = bicep(INFRA / "main.bicep")["parameters"]["webPhoneKey"]
    assert "secure" in json.dumps(main["decorators"])


def test_twilio_is_off_unless_both_credentials_are_given_and_they_come_from_key_vault() -> None:
    path, _app = container_app()
    doc = bicep(path)
    assert doc["parameters"]["twilioAccountSidSecretUri"]["default"] == ""
    assert doc["parameters"]["twilioAuthTokenSecretUri"]["default"] == ""
    env = doc["variables"]["twilioEnv"]["value"]["operator"]["operands"]
    assert env["condition"] == "twilioOn" and env["false_value"] == []
    assert env["true_value"] == [{"name": "TWILIO_ACCOUNT_SID", "secretRef": "twilioSidRef"},
                                 {"name": "TWILIO_AUTH_TOKEN", "secretRef": "twilioAuthRef"}], "no values"
    azd = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert azd["twilioAccountSid"]["value"] == "${TWILIO_ACCOUNT_SID=}"
    assert azd["twilioAuthToken"]["value"] == "${TWILIO_AUTH_TOKEN=}"
    for name in ("twilioAccountSid", "twilioAuthToken"):
        assert "secure" in json.dumps(bicep(INFRA / "main.bicep")["parameters"][name]["decorators"])


def test_recordings_storage_exists_only_when_turned_on_with_no_keys_no_public_access_and_a_retention_rule() -> None:
    main = bicep(INFRA / "main.bicep")
    assert main["parameters"]["recordings"]["default"] is False, "off unless the operator turns it on"
    storage = main["modules"]["storage"]["config"]
    assert storage["condition"] == "recordings"
    assert storage["config"]["params"]["retentionDays"] == "recordingsRetentionDays"
    assert decorators(main["parameters"]["recordingsRetentionDays"]) == {"description": ANY, "min_value": 1,
                                                                        "max_value": 3650}
    [(path, _symbol, account)] = of_type("Microsoft.Storage/storageAccounts")
    props = account["config"]["properties"]
    assert props["allowSharedKeyAccess"] is False and props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True and props["minimumTlsVersion"] == "TLS1_2"
    [(_p, _s, container)] = of_type("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["config"]["properties"]["publicAccess"] == "None"
    [(_p, _s, policy)] = of_type("Microsoft.Storage/storageAccounts/managementPolicies")
    [rule] = policy["config"]["properties"]["policy"]["rules"]
    assert rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterCreationGreaterThan"] == "retentionDays"
    assert "appendBlob" in rule["definition"]["filters"]["blobTypes"], "recordings are append blobs"


def test_the_recordings_url_reaches_the_app_only_when_recordings_are_on() -> None:
    path, _app = container_app()
    doc = bicep(path)
    assert doc["parameters"]["recordingsUrl"]["default"] == ""
    env = doc["variables"]["recordingsEnv"]["value"]["operator"]["operands"]
    assert env["condition"]["function"]["type"] == "empty" and env["true_value"] == []
    assert env["false_value"] == [{"name": "CALLBOT_RECORDINGS_URL", "value": "recordingsUrl"}]
    passed = bicep(INFRA / "main.bicep")["modules"]["app"]["config"]["params"]["recordingsUrl"]
    assert {"recordings", "storage", "containerUrl"} <= identifiers(passed)
    azd = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert azd["recordings"]["value"] == "${CALLBOT_RECORDINGS=false}"
    assert azd["recordingsRetentionDays"]["value"] == "${CALLBOT_RECORDINGS_RETENTION_DAYS=30}"
