"""Built-in plugins. Each module is a self-contained plugin registered exactly like a third-party one: through
an entry point in the `diffstack` group of this distribution (pyproject.toml), so core never imports this
package."""
