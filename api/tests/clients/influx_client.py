#!/usr/bin/env python3
"""Writes to aemos with InfluxDB's own Python client (influxdb-client, the v2 API), as an
application would: the batching write API (gzip on) for N points, then one synchronous write
with a bad token. Prints what the client saw as JSON; used by aemos's InfluxDB tests.

usage: influx_client.py URL TOKEN N BAD_TOKEN CA_FILE
"""
import json
import sys
import time

from influxdb_client import InfluxDBClient, Point, WriteOptions, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

T0 = (int(time.time()) - 3600) * 1000  # an hour ago, in ms


def main() -> None:
    url, token, n, bad_token, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    batches, errors = [], []
    options = WriteOptions(batch_size=250, flush_interval=200, max_retries=0)
    with InfluxDBClient(
        url=url, token=token, org="aemos", enable_gzip=True, ssl_ca_cert=ca
    ) as client:
        with client.write_api(
            write_options=options,
            success_callback=lambda conf, data: batches.append(
                (data.decode() if isinstance(data, bytes) else data).count("\n") + 1
            ),
            error_callback=lambda conf, data, e: errors.append(str(e)),
        ) as write_api:
            for i in range(n):
                point = (
                    Point("cpu")
                    .tag("sensor", "py-s1")
                    .tag("host", f"h{i % 4}")
                    .field("usage", float(i))
                    .time(T0 + i, WritePrecision.MS)
                )
                write_api.write(bucket="telegraf", record=point, write_precision=WritePrecision.MS)
    result = {"batches": batches, "errors": errors}
    with InfluxDBClient(url=url, token=bad_token, org="aemos", ssl_ca_cert=ca) as bad:
        try:
            bad.write_api(write_options=SYNCHRONOUS).write(
                bucket="telegraf", record="cpu,sensor=py-s1 usage=1"
            )
            result["bad_token"] = None
        except ApiException as e:
            result["bad_token"] = {"status": e.status, "body": json.loads(e.body)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
