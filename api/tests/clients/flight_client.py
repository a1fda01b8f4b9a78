#!/usr/bin/env python3
"""Reads from aemos over Arrow Flight SQL with ADBC (adbc_driver_flightsql), as an application
would, and prints what came back as JSON: used by aemos's Flight SQL tests.

The DBAPI cursor prepares each statement (CreatePreparedStatement), binds its parameters with
DoPut and fetches the result as a pyarrow Table (GetFlightInfo, DoGet); the catalog is read with
GetObjects (GetCatalogs, GetDbSchemas, GetTables) and GetTableSchema.

usage: flight_client.py < request.json
request: {"uri": "grpc://host:port", "db_kwargs": {...},
          "statements": [{"sql": "...", "params": [...]}], "catalog": true}
output: {"connect_error": "..."} or {"results": [{"schema": [[name, arrow type], ...],
         "rows": [[...], ...]} or {"error": "..."}], "tables": [...], "readings_schema": [...]}
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql


def main() -> None:
    request = json.load(sys.stdin)
    out = {}
    try:
        conn = flightsql.connect(request["uri"], db_kwargs=request.get("db_kwargs", {}))
    except Exception as e:  # the driver raises its own DBAPI errors
        print(json.dumps({"connect_error": f"{type(e).__name__}: {e}"}))
        return
    with conn:
        results = []
        for s in request.get("statements", []):
            try:
                with conn.cursor() as cur:
                    cur.execute(s["sql"], s.get("params"))
                    table = cur.fetch_arrow_table()
                    results.append({
                        "schema": [[f.name, str(f.type)] for f in table.schema],
                        "rows": [list(r.values()) for r in table.to_pylist()],
                    })
            except Exception as e:
                results.append({"error": f"{type(e).__name__}: {e}"})
        out["results"] = results
        if request.get("catalog"):
            objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
            out["tables"] = sorted(
                f"{c['catalog_name']}.{s['db_schema_name']}.{t['table_name']}:{t['table_type']}"
                for c in objects
                for s in c["catalog_db_schemas"] or []
                for t in s["db_schema_tables"] or []
            )
            schema = conn.adbc_get_table_schema("readings", catalog_filter="aemos", db_schema_filter="public")
            out["readings_schema"] = [[f.name, str(f.type)] for f in schema]
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
