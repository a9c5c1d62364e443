"""The `checkpoint` command line: thin commands, registered downward only
(`main` adds the field, HQ and serve commands; none of them imports `main`).
"""
