"""Worker definitions of this project, loaded by `module:attr` from the manifest."""
