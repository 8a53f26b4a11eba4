"""Dockerfile builds: the stage scheduler, one executor per step kind, the layer cache, RUN mounts and exporters."""
