"""Index builds CONCURRENTLY that a migration run again after an interruption completes.

An interrupted ``CREATE INDEX CONCURRENTLY`` (a deploy's time limit) leaves its index
behind, INVALID: never used, and a unique one never relied on. Run again, these builds
drop such a leftover and build it again, and keep a valid index that a run got as far as
building. Each statement commits on its own: the migrations using them are not atomic.
"""

from django.db import migrations


def _drop_if_invalid(cursor, name):
    cursor.execute(
        "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name]
    )
    row = cursor.fetchone()
    if row is not None and row[0]:
        cursor.execute(f'DROP INDEX CONCURRENTLY "{name}"')


def _swap(name, temporary, create):
    def swap(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            _drop_if_invalid(cursor, temporary)
            cursor.execute(create.format(name=temporary))
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
            cursor.execute(f'ALTER INDEX "{temporary}" RENAME TO "{name}"')

    return swap


def swap_index(name, *, create, create_back):
    """Replace index ``name``: the new one is built beside it, then takes its name, so
    the table is never without one. ``create`` and ``create_back`` (to migrate back) are
    ``CREATE … INDEX CONCURRENTLY IF NOT EXISTS {name} …`` statements."""
    return migrations.RunPython(
        _swap(name, f"{name}_new", create), _swap(name, f"{name}_old", create_back)
    )


def _build_and_remove(model_name, index):
    """RunPython functions that build ``index`` CONCURRENTLY, completing an interrupted
    build, and drop it."""

    def build(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            _drop_if_invalid(cursor, index.name)
            cursor.execute("SELECT to_regclass(%s) IS NULL", [index.name])
            (missing,) = cursor.fetchone()
        if missing:
            model = apps.get_model("scheduler", model_name)
            schema_editor.add_index(model, index, concurrently=True)

    def remove(apps, schema_editor):
        model = apps.get_model("scheduler", model_name)
        schema_editor.remove_index(model, index, concurrently=True)

    return build, remove


def add_index(model_name, index):
    """``AddIndexConcurrently``, which a run again after an interruption completes."""
    build, remove = _build_and_remove(model_name, index)
    return migrations.SeparateDatabaseAndState(
        database_operations=[migrations.RunPython(build, remove)],
        state_operations=[migrations.AddIndex(model_name=model_name, index=index)],
    )


def remove_index(model_name, index):
    """``RemoveIndexConcurrently``, whose migration back a run again after an
    interruption completes."""
    build, remove = _build_and_remove(model_name, index)
    return migrations.SeparateDatabaseAndState(
        database_operations=[migrations.RunPython(remove, build)],
        state_operations=[migrations.RemoveIndex(model_name=model_name, name=index.name)],
    )
