"""App bundles: the manifest, the simulation measurement and the scaffold."""

from confide.bundle.measure import AppManifest, measure_bundle, read_manifest
from confide.bundle.scaffold import init_bundle

__all__ = ["AppManifest", "init_bundle", "measure_bundle", "read_manifest"]
