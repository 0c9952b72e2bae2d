"""``walt-node check-image``: does an image provide what WalT needs to boot it?

:func:`check_image` reads an image root directory or an image archive
(:mod:`.archive`) and checks each feature of the WalT page "Creating a WalT
image from scratch" (:mod:`.checks`), without running anything of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from walt_node.imagecheck.archive import ArchiveProblem, is_oci_layout, open_archive
from walt_node.imagecheck.checks import CHECKS, PASSES, Context, Feature
from walt_node.imagecheck.tree import DirTree

__all__ = ["ArchiveProblem", "Report", "check_image"]


@dataclass
class Report:
    target: str
    format: str  # "directory", "docker-archive", "oci-archive", "oci-layout"
    labels: Optional[Dict[str, str]]
    features: List[Feature] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every mandatory feature passes."""
        return all(f.status == PASSES for f in self.features if f.mandatory)

    def feature(self, feature_id: str) -> Feature:
        return next(f for f in self.features if f.id == feature_id)

    def as_dict(self) -> dict:
        return {"target": self.target, "format": self.format, "labels": self.labels,
                "ok": self.ok, "features": [f.as_dict() for f in self.features]}

    def lines(self) -> List[str]:
        out = [f"{self.target} ({self.format})"]
        for feature in self.features:
            kind = "mandatory" if feature.mandatory else "optional"
            text = feature.found if feature.status == PASSES else "; ".join(feature.problems)
            line = f"{feature.id:<4}{feature.status:<12}{feature.title} [{kind}]: {text}"
            if feature.status != PASSES and feature.fix:
                line += f" -- fix: {feature.fix}"
            out.append(line)
        verdict = "every mandatory feature passes" if self.ok else \
            "mandatory features fail: WalT cannot boot this image"
        out.append(f"result: {verdict}")
        return out


def check_image(target: Path, labels: Optional[Dict[str, str]] = None,
                ipxe_variables: Optional[Dict[str, str]] = None) -> Report:
    """Check ``target``; ``labels`` stand in for (or override) the image's labels."""
    target = Path(target)
    if not target.exists():
        raise ArchiveProblem(f"{target} does not exist: give an image root directory or an image "
                             "archive ('docker save'/'podman save'/OCI)")
    archive = None
    if target.is_dir() and not is_oci_layout(target):
        tree, kind = DirTree(target), "directory"
        image_labels = dict(labels) if labels else None
    else:
        archive = open_archive(target)
        tree, kind = archive.tree, archive.format
        image_labels = {**archive.labels, **(labels or {})}
    try:
        context = Context(tree, image_labels, dict(ipxe_variables or {}))
        report = Report(str(target), kind, image_labels)
        report.features = [check(context) for check in CHECKS]
        return report
    finally:
        if archive is not None:
            archive.close()
