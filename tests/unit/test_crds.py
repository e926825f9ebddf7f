"""crds/ must be exactly what the models generate, and structural enough for the apiserver."""
from pathlib import Path

import yaml

from kubechain.api.crdgen import crd, render, write_all
from kubechain.api.v1alpha1 import GROUP, KINDS

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_dir_is_up_to_date(tmp_path):
    stale = [info.plural for info in KINDS if (CRDS / f"{GROUP}_{info.plural}.yaml").read_text() != render(info)]
    assert not stale, f"crds/ is stale for {stale}: run `make crds`"
    fresh = {p.name: p.read_text() for p in write_all(tmp_path)}
    assert {p.name: p.read_text() for p in CRDS.glob("*.yaml")} == fresh, "crds/ is stale: run `make crds`"


def _walk(schema, path="$"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_every_field_is_described_and_typed():
    for info in KINDS:
        root = crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(root):
            if path.endswith(".metadata"):
                continue
            assert "type" in node, f"{info.kind} {path} has no type"
            assert not {"$ref", "anyOf", "title"} & node.keys(), f"{info.kind} {path}"
            assert isinstance(node.get("additionalProperties", {}), dict), f"{info.kind} {path}: only typed maps"
            assert node.get("description") or path.endswith("[]") or path == "$", f"{info.kind} {path} undocumented"


def test_names_columns_and_category():
    taskrun = yaml.safe_load((CRDS / f"{GROUP}_taskruns.yaml").read_text())
    assert taskrun["spec"]["names"]["categories"] == ["kubechain"]
    assert "tr" in taskrun["spec"]["names"]["shortNames"]
    columns = [c["name"] for c in taskrun["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Agent", "Phase", "Parent", "Step", "Tokens", "Cost", "Age"]
    assert taskrun["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_tool_execution_is_one_of_in_the_schema():
    tool = crd(next(i for i in KINDS if i.kind == "Tool"))
    execution = tool["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["execution"]
    assert execution["oneOf"] == [{"required": [k]} for k in ("builtin", "http", "container", "delegate", "ray")]
