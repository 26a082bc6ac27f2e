"""Demo data for ``hrx up --demo``: synthetic patients and reports, rendered as FHIR R4 Bundles."""
from __future__ import annotations

import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import yaml

from adapters.fhir import INSTITUTION_SYSTEM, RESIDENT_ID_SYSTEMS
from exchange.progress import progress_bar
from schemas.resident_id import make_resident_id

log = logging.getLogger("hrx.demo")
UCUM = "http://unitsofmeasure.org"


def load() -> dict[str, Any]:
    data = yaml.safe_load(resources.files(__name__).joinpath("demo.yaml").read_text("utf-8"))
    for patient in data["patients"]:
        patient["resident_id"] = make_resident_id(patient["resident_id_17"])
    return data


def lab_bundle(*, resident_id: str, institution: str, report_id: str, code: str, display: str | None,
               observations: list[dict[str, Any]], issued: datetime, status: str = "final",
               version: int | None = None, sex: str | None = None, local_system: str | None = None) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle: Organization + Patient + DiagnosticReport + Observations."""
    org, pat, rep = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    system = local_system or f"urn:hrx:local-code:{institution}"
    obs_entries = []
    for o in observations:
        resource: dict[str, Any] = {
            "resourceType": "Observation", "status": "final" if status != "preliminary" else "preliminary",
            "code": {"coding": [{"system": o.get("system", system), "code": o["code"], "display": o.get("display")}]},
            "subject": {"reference": pat}, "issued": issued.isoformat(),
        }
        if "value" in o:
            resource["valueQuantity"] = {"value": o["value"], "unit": o.get("unit"), "system": UCUM,
                                         "code": o.get("unit")}
        if "text" in o:
            resource["valueString"] = o["text"]
        if "low" in o or "high" in o:
            resource["referenceRange"] = [{k: {"value": o[k], "unit": o.get("unit"), "system": UCUM,
                                               "code": o.get("unit")} for k in ("low", "high") if k in o}]
        if "flag" in o:
            resource["interpretation"] = [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": o["flag"]}]}]
        obs_entries.append((f"urn:uuid:{uuid.uuid4()}", resource))
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": status,
        "identifier": [{"system": f"urn:hrx:report-id:{institution}", "value": report_id}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": pat}, "performer": [{"reference": org}],
        "effectiveDateTime": (issued - timedelta(hours=2)).isoformat(), "issued": issued.isoformat(),
        "result": [{"reference": url} for url, _ in obs_entries],
    }
    if version is not None:
        report["meta"] = {"versionId": str(version)}
    entries = [
        (org, {"resourceType": "Organization", "identifier": [{"system": INSTITUTION_SYSTEM, "value": institution}]}),
        (pat, {"resourceType": "Patient", "identifier": [{"system": RESIDENT_ID_SYSTEMS[0], "value": resident_id}],
               **({"gender": sex} if sex else {})}),
        (rep, report), *obs_entries,
    ]
    return {"resourceType": "Bundle", "type": "transaction",
            "identifier": {"system": f"urn:hrx:bundle:{institution}", "value": f"{report_id}-v{version or 0}"},
            "entry": [{"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
                      for url, r in entries]}


def bundles(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every demo report as a Bundle, issued relative to ``now``."""
    now = now or datetime.now(UTC)
    data = load()
    patients = {p["key"]: p for p in data["patients"]}
    out = []
    for r in data["reports"]:
        patient = patients[r["patient"]]
        out.append(lab_bundle(resident_id=patient["resident_id"], institution=r["institution"], report_id=r["id"],
                              code=r["code"], display=r.get("display"), observations=r["observations"],
                              issued=(now - timedelta(hours=r["hours_ago"])).replace(microsecond=0),
                              status=r.get("status", "final"), sex=patient.get("sex")))
    return out


def check_request() -> dict[str, Any]:
    data = load()
    patient = next(p for p in data["patients"] if p["key"] == data["check"]["patient"])
    return {"patient": {"resident_id": patient["resident_id"]},
            "requesting_institution": data["check"]["requesting_institution"]}


def _post(url: str, body: dict[str, Any] | bytes, content_type: str, token: str | None = None,
          headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": content_type, **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def seed_principals(database: Any) -> dict[str, str]:
    """The demo's accounts and clients, with fresh secrets on every run: {name: secret or password}.

    Demo-only credentials: a deployment creates its own with ``hrx users add`` and ``hrx clients add``.
    """
    from exchange.auth import accounts
    from exchange.auth.credentials import new_token, totp_uri

    data = load()
    secrets: dict[str, str] = {}
    for spec in data["accounts"]:
        password = new_token()[:16]
        try:
            totp = accounts.add_user(database, spec["username"], spec["role"], spec["name"], password,
                                     institution=spec.get("institution"), department=spec.get("department"),
                                     scope=spec.get("scope"))
        except accounts.AccountError:  # an earlier demo run created it: a new password
            accounts.set_password(database, spec["username"], password)
            totp = next((a.totp_secret for a in accounts.list_users(database) if a.username == spec["username"]),
                        None)
        secrets[spec["username"]] = password
        if totp:
            secrets[f"{spec['username']} TOTP"] = totp_uri(totp, spec["username"])
    clients = [(f"demo-source-{i}", "source", i) for i in sorted({r["institution"] for r in data["reports"]})]
    his = data["his_client"]
    clients.append((his["client_id"], "his", his["institution"]))
    for client_id, role, institution in clients:
        try:
            secrets[client_id] = accounts.add_client(database, client_id, role, institution, f"demo {role}")
        except accounts.AccountError:
            secrets[client_id] = accounts.rotate_client(database, client_id)
    return secrets


def client_token(base: str, client_id: str, secret: str, tls: ssl.SSLContext | None = None) -> str:
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": secret}).encode()
    status, body = _post(f"{base}/api/v1/auth/token", form, "application/x-www-form-urlencoded", tls=tls)
    if status != 200:
        raise RuntimeError(f"demo: the token endpoint answered {status}: {body}")
    return str(body["access_token"])


def run_demo(server: Any, settings: Any, book: Any, database: Any) -> None:
    """Create the demo principals, wait for the API, send the demo Bundles through POST /fhir as each
    hospital's source client, wait until stored, print how to log in and a curl."""
    base = settings.api_url
    # Over TLS the demo trusts the API's own certificate (a self-signed one included).
    tls = ssl.create_default_context(cafile=str(settings.tls_cert)) if settings.tls_cert else None
    secrets = seed_principals(database)
    log.warning("demo: DEMO-ONLY credentials created (never use them outside a demo): %s",
                ", ".join(sorted(k for k in secrets if not k.endswith("TOTP"))))
    while not server.started:
        time.sleep(0.05)
    sent = 0
    tokens: dict[str, str] = {}
    demo_bundles = bundles()
    with progress_bar(len(demo_bundles), "demo: POST /fhir", "Bundle") as advance:
        for bundle in demo_bundles:
            institution = bundle["identifier"]["system"].rsplit(":", 1)[-1]
            client_id = f"demo-source-{institution}"
            tokens.setdefault(institution, client_token(base, client_id, secrets[client_id], tls))
            status, body = _post(f"{base}/fhir", bundle, "application/fhir+json", tokens[institution], tls=tls)
            advance(1)
            if status != 200:
                log.error("demo: POST /fhir answered %d: %s", status, body)
                continue
            sent += 1
    log.info("demo: %d of %d Bundle(s) accepted through POST /fhir", sent, len(demo_bundles))
    data = load()
    his = data["his_client"]
    his_token = client_token(base, his["client_id"], secrets[his["client_id"]], tls)
    request = {**check_request(), "encounter_id": his["encounter_id"]}
    on_behalf = {"X-HRX-On-Behalf-Of": his["on_behalf_of"]}
    # The demo patient's reports just sent; the check may also answer reports an earlier demo left in this store.
    expected = {(r["institution"], r["id"]) for r in data["reports"] if r["patient"] == data["check"]["patient"]}
    deadline = time.monotonic() + 60
    found: set[tuple[str, str]] = set()
    while time.monotonic() < deadline and not expected <= found:
        status, body = _post(f"{base}/api/v1/recognition/check", request, "application/json", his_token, on_behalf,
                             tls)
        if status == 200:
            found = {(e["result"]["issuer"], e["result"]["result_id"]) for e in body["results"]}
        time.sleep(0.2)
    arrived, others = len(expected & found), len(found - expected)
    log.log(logging.INFO if arrived == len(expected) else logging.WARNING,
            "demo: the check answers %d of the demo patient's %d demo reports%s%s", arrived, len(expected),
            "" if arrived == len(expected) else " (the others were not stored within 60 s)",
            f"; it also answers {others} other report(s) of that patient already in this store" if others else "")
    payload = json.dumps(request, ensure_ascii=False)
    cacert = f" --cacert {settings.tls_cert}" if settings.tls_cert else ""
    logins = "\n".join(f"    {name}: {secret}" for name, secret in sorted(secrets.items()))
    print("\nHR Exchange is ready. DEMO-ONLY credentials (new on every `hrx up --demo`; accounts log in at "
          f"POST {base}/api/v1/auth/token with grant_type=password, clients with grant_type=client_credentials):\n"
          f"{logins}\n    the demo patient: resident ID {check_request()['patient']['resident_id']} at "
          f"POST {base}/api/v1/patient/code, then the code from {settings.var_dir / 'patient-codes.jsonl'} at "
          f"POST {base}/api/v1/patient/token\n    the web pages: {base}/ui/login (clinician, operator, auditor), "
          f"{base}/ui/patient (patients)\n\nAsk, as the HIS of {his['institution']} for {his['on_behalf_of']}, which prior results "
          "the demo patient's new hospital may reuse (synthetic demo identity):\n\n"
          f"  TOKEN=$(curl -s{cacert} {base}/api/v1/auth/token -d grant_type=client_credentials "
          f"-d client_id={his['client_id']} -d client_secret='{secrets[his['client_id']]}' | "
          "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
          f"  curl -s{cacert} -X POST {base}/api/v1/recognition/check -H \"Authorization: Bearer $TOKEN\" \\\n"
          f"       -H 'X-HRX-On-Behalf-Of: {his['on_behalf_of']}' -H 'Content-Type: application/json' \\\n"
          f"       -d '{payload}'\n", flush=True)
