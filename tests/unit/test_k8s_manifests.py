"""The Kubernetes manifests in deploy/kubernetes against the API's own schemas,
offline: kubernetes-validate bundles the OpenAPI schemas of every release
(strict: an unknown or misspelt field fails too). No cluster is available to
these tests; what the schemas cannot say (that the Job runs one kill on one
node with what sockterm needs there) is checked field by field."""

import glob
import os

import kubernetes_validate as kv
import pytest
import yaml          # kubernetes-validate's own dependency

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFESTS = sorted(glob.glob(os.path.join(ROOT, "deploy", "kubernetes", "*.yaml")))
# the oldest release still common in managed clusters, and the newest bundled
VERSIONS = ["1.27", kv.latest_version()]


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def job():
    [doc] = documents(os.path.join(ROOT, "deploy", "kubernetes", "kill-job.yaml"))
    return doc


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=os.path.basename)
def test_manifest_is_valid_against_the_api_schema(path, version):
    for doc in documents(path):
        kv.validate(doc, version, strict=True)


def test_the_schema_check_can_fail():
    doc = job()
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["priviledged"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, VERSIONS[-1], strict=True)
    doc = job()
    doc["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, VERSIONS[-1], strict=True)


def test_the_job_runs_one_kill_on_one_node_as_a_node_debug_pod_would():
    from sockterm import __version__
    doc = job()
    assert doc["spec"]["backoffLimit"] == 0                 # one kill, never retried
    pod = doc["spec"]["template"]["spec"]
    assert pod["nodeName"] == "NODE_NAME" and doc["metadata"]["name"].endswith("NODE_NAME")
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod["restartPolicy"] == "Never"
    assert {"operator": "Exists"} in pod["tolerations"]
    [container] = pod["containers"]
    assert container["securityContext"] == {"privileged": True}
    assert container["image"].endswith(f"/sockterm:{__version__}")
    assert container["command"] == ["sockterm"]
    args = container["args"]
    assert args[0] == "kill" and "--yes" in args and args[args.index("-o") + 1] == "json"
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert volume == {"name": mount["name"], "hostPath": {"path": "/", "type": "Directory"}}
    assert mount["mountPath"] == "/host" and mount["readOnly"] is True
    assert {"name": "SOCKTERM_ROOT_PREFIX", "value": "/host"} in container["env"]
