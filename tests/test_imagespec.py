"""image.spec is YAML to the server: walt-node edits only its templates list, keeping the
maintainer's comments, keys and layout. What the server would read is checked with
PyYAML's safe_load (the YAML library of upstream WalT's own venv, test time only)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.upstream_node import upstream_venv
from test_setup import make_image, ok, setup, snapshot

from walt_node.install import InstallError
from walt_node.install.imagespec import add_templates, missing_templates, remove_templates

MAINTAINER_SPEC = """\
# image.spec of my experiment image
templates:
  # the collector's address
  - /etc/collector.conf     # filled at mount
  - "/etc/with space.conf"
features:
  lldp: true   # keep
"""


def server_reads(spec: Path):
    """What the WalT server gets from the spec (yaml.safe_load)."""
    done = subprocess.run([str(upstream_venv() / "bin/python"), "-c",
                           "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                           str(spec)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "image.spec"
    path.write_text(MAINTAINER_SPEC)
    return path


def test_yaml_spec_gets_our_template_and_keeps_every_comment(spec: Path) -> None:
    assert missing_templates(spec, ["/etc/collector.conf", "/etc/walt/x.conf"]) == ["/etc/walt/x.conf"]
    added, created = add_templates(spec, ["/etc/walt/x.conf"])
    assert (added, created) == (["/etc/walt/x.conf"], False)
    text = spec.read_text()
    for line in MAINTAINER_SPEC.splitlines():
        assert line in text
    assert server_reads(spec) == {
        "templates": ["/etc/collector.conf", "/etc/with space.conf", "/etc/walt/x.conf"],
        "features": {"lldp": True}}
    remove_templates(spec, ["/etc/walt/x.conf"], created=False)
    assert spec.read_text() == MAINTAINER_SPEC


@pytest.mark.parametrize("original, expected", [
    ("# no templates yet\nfeatures: {a: 1}\n", ["/etc/walt/x.conf"]),
    ("templates: [/etc/a, '/etc/b']  # flow\n", ["/etc/a", "/etc/b", "/etc/walt/x.conf"]),
    ("templates:\n", ["/etc/walt/x.conf"]),
    ("templates:\n- /etc/a\nother: 1\n", ["/etc/a", "/etc/walt/x.conf"]),
    ('{"templates": ["/etc/a"], "k": 2}', ["/etc/a", "/etc/walt/x.conf"]),
])
def test_every_spec_layout_is_edited_as_the_server_reads_it(tmp_path: Path, original: str,
                                                            expected: list) -> None:
    spec = tmp_path / "image.spec"
    spec.write_text(original)
    before = server_reads(spec) or {}
    add_templates(spec, ["/etc/walt/x.conf"])
    after = server_reads(spec)
    assert after["templates"] == expected
    assert {k: v for k, v in after.items() if k != "templates"} == \
        {k: v for k, v in before.items() if k != "templates"}
    if "#" in original:
        assert original.split("#", 1)[1].strip() in spec.read_text()
    remove_templates(spec, ["/etc/walt/x.conf"], created=False)
    assert (server_reads(spec) or {}).get("templates") in (None, [], before.get("templates"))


@pytest.mark.parametrize("content", ["templates: /etc/x\n", "templates: [/etc/a,\n  /etc/b]\n",
                                     "templates:\n  - /etc/a\n    nested: 1\n", "templates: &t\n  - /a\n",
                                     "{not json", '["a list"]'])
def test_spec_it_cannot_edit_safely_is_refused_and_untouched(tmp_path: Path, content: str) -> None:
    spec = tmp_path / "image.spec"
    spec.write_text(content)
    with pytest.raises(InstallError, match="image.spec"):
        add_templates(spec, ["/etc/walt/x.conf"])
    assert spec.read_text() == content


def test_setup_merges_into_a_yaml_spec_and_uninstall_gives_it_back(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    (image / "etc/walt").mkdir(parents=True)
    spec = image / "etc/walt/image.spec"
    spec.write_text(MAINTAINER_SPEC)
    (image / "etc/walt/node.conf").write_text("server=%(server_ip)s\n")
    before = snapshot(image)
    ok(setup(image, "--spec-template", "/etc/walt/node.conf"))
    assert server_reads(spec)["templates"][-1] == "/etc/walt/node.conf"
    # the maintainer edits the spec meanwhile: uninstall removes only our entry
    spec.write_text(spec.read_text().replace("# keep", "# keep (edited)"))
    ok(setup(image, "--uninstall"))
    assert spec.read_text() == MAINTAINER_SPEC.replace("# keep", "# keep (edited)")
    spec.write_text(MAINTAINER_SPEC)
    assert snapshot(image) == before
