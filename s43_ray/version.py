"""The package version, in a module of its own: every layer can read it without importing the
package root (which offers the public API, :mod:`s43_ray.api`, to users)."""

__version__ = "0.1.0"
