"""Where work runs: isolation and snapshot driver composed for one store, working containers, snapshot work in the namespace."""
