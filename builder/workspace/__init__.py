"""Where work runs: the Workspace (a store and how work runs over it: the library's first
argument), isolation and snapshot driver composed for one store, working containers,
snapshot work in the namespace."""
