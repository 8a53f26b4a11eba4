"""Images: the OCI model, the content store, layouts and archives, transports, the registry client, layer compression."""
