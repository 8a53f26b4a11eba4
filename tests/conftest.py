"""Shared fixtures live in tests/fixtures/, one module per kind of real part:
registry.py (docker-registry servers), users.py (the unprivileged test user),
images.py (base images made locally from busybox-static), debian.py (a small Debian base with apt
and dpkg made from this host's own files)."""
pytest_plugins = ["tests.fixtures.registry", "tests.fixtures.users", "tests.fixtures.images", "tests.fixtures.rootfs",
                  "tests.fixtures.debian"]
