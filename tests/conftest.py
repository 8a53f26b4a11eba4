"""Shared fixtures live in tests/fixtures/, one module per kind of real part:
registry.py (docker-registry servers), users.py (the unprivileged test user),
images.py (base images made locally from busybox-static / debootstrap)."""
pytest_plugins = ["tests.fixtures.registry", "tests.fixtures.users", "tests.fixtures.images", "tests.fixtures.rootfs"]
