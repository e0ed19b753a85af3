from rich.table import Table

from hashbench.commands.common import command, console


@command("list")
def list_command():
    """List the registered methods and the datasets."""
    from hashbench.registry import method_names, method_spec
    from hashbench.specs import load_registry

    methods = Table(title="methods", title_justify="left")
    for col in ("name", "kind", "description"):
        methods.add_column(col)
    for name in method_names():  # from the methods' specs: no method module (nor torch) is imported
        spec = method_spec(name)
        methods.add_row(name, "hashing" if spec.hashing else "float (reference)", spec.description)
    datasets = Table(title="datasets", title_justify="left")
    for col in ("name", "users", "items", "interactions", "source"):
        datasets.add_column(col)
    for name, spec in load_registry().items():
        datasets.add_row(name, f"{spec.users:,}", f"{spec.items:,}",
                         f"{spec.interactions:,}" if spec.interactions else "generated",
                         "built in" if spec.builtin else spec.homepage or "")
    console.print(methods)
    console.print(datasets)
