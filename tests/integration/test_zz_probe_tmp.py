import time
from pathlib import Path
from ferry.devenv.vault import operator_env
from tests.integration.test_secrets_failures import *  # noqa
from tests.integration.test_secrets_failures import cluster, cluster_dir, start_operator, start_own_vault  # noqa

def test_probe_missing(cluster, start_own_vault, start_operator, tmp_path):
    kube = cluster
    vault = start_own_vault()
    audit = enable_file_audit(vault, tmp_path)
    env = operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"])
    start_operator({**env, "FERRY_VAULT_MIN_REFRESH_SECONDS": "1"})
    ns = kube.namespace("probe2")
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db", refreshInterval="2s")))
    wait_secrets_failed(kube, ns, "app", "SecretNotFound")
    r0 = kv_reads(audit, "secret", f"{ns}/db"); rv0 = resource_version(kube, "configentry", ns, "app")
    time.sleep(10)
    print("READS in 10s while stalled:", kv_reads(audit, "secret", f"{ns}/db") - r0, "entry rv", rv0, resource_version(kube, "configentry", ns, "app"))
    ev = kube.get_json("events", "-n", ns)["items"]
    print("EVENTS", [(e["reason"], e.get("count")) for e in ev])
