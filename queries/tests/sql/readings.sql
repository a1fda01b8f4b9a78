-- everything, from files and buffer
SELECT count(*) AS n FROM readings
----
+-----+
| n   |
+-----+
| 728 |
+-----+

-- per variable over all sensors
SELECT variable, count(*) AS n, min(value) AS lo, max(value) AS hi FROM readings GROUP BY variable ORDER BY variable
----
+-------------+-----+------+-------+
| variable    | n   | lo   | hi    |
+-------------+-----+------+-------+
| humidity    | 360 | 40.0 | 99.5  |
| temperature | 363 | 20.0 | 101.0 |
| usage       | 5   | 10.0 | 91.0  |
+-------------+-----+------+-------+

-- the buffer's rows are visible
SELECT sensor, device, value FROM readings WHERE device = 'device-x' ORDER BY sensor
----
+----------+----------+-------+
| sensor   | device   | value |
+----------+----------+-------+
| sensor-0 | device-x | 99.0  |
| sensor-1 | device-x | 100.0 |
| sensor-2 | device-x | 101.0 |
+----------+----------+-------+

-- time filters prune files and still see the buffer
SELECT count(*) AS n FROM readings WHERE time >= '2026-01-20T12:30:00Z'
----
+---+
| n |
+---+
| 4 |
+---+

SELECT count(*) AS n FROM readings WHERE time BETWEEN '2026-01-20T10:30:00Z' AND '2026-01-20T10:39:59Z' AND variable = 'temperature'
----
+----+
| n  |
+----+
| 30 |
+----+

-- date_bin: 30-minute averages for one sensor
SELECT date_bin(INTERVAL '30 minutes', time) AS bucket, round(avg(value), 3) AS avg FROM readings WHERE sensor = 'sensor-1' AND variable = 'humidity' GROUP BY 1 ORDER BY 1
----
+----------------------+-------+
| bucket               | avg   |
+----------------------+-------+
| 2026-01-20T10:30:00Z | 47.25 |
| 2026-01-20T11:00:00Z | 62.25 |
| 2026-01-20T11:30:00Z | 77.25 |
| 2026-01-20T12:00:00Z | 92.25 |
+----------------------+-------+

-- top sensors by max temperature
SELECT sensor, max(value) AS m FROM readings WHERE variable = 'temperature' GROUP BY sensor ORDER BY m DESC LIMIT 2
----
+----------+-------+
| sensor   | m     |
+----------+-------+
| sensor-2 | 101.0 |
| sensor-1 | 100.0 |
+----------+-------+

-- schema of the table
SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'readings' ORDER BY ordinal_position
----
+-------------+--------------------------------------------------------------------------------+
| column_name | data_type                                                                      |
+-------------+--------------------------------------------------------------------------------+
| time        | Timestamp(ms, "UTC")                                                           |
| device      | Utf8View                                                                       |
| sensor      | Utf8View                                                                       |
| variable    | Utf8View                                                                       |
| value       | Float64                                                                        |
| measurement | Utf8View                                                                       |
| tags        | Map("entries": non-null Struct("key": non-null Utf8, "value": Utf8), unsorted) |
+-------------+--------------------------------------------------------------------------------+

-- errors carry DataFusion's message
SELECT nope FROM readings
----
error: nope

-- the files' declared sort order is used, the buffer's rows merged in
SELECT sensor, variable, time, value FROM readings WHERE sensor = 'sensor-1' ORDER BY sensor, variable DESC, time DESC LIMIT 3
----
+----------+-------------+----------------------+-------+
| sensor   | variable    | time                 | value |
+----------+-------------+----------------------+-------+
| sensor-1 | temperature | 2026-01-20T12:30:00Z | 100.0 |
| sensor-1 | temperature | 2026-01-20T12:29:00Z | 21.9  |
| sensor-1 | temperature | 2026-01-20T12:28:00Z | 21.8  |
+----------+-------------+----------------------+-------+

-- line protocol's tags are a map: filter and group by one of them, from files and the buffer
SELECT tags['host'] AS host, count(*) AS n, max(value) AS top FROM readings WHERE measurement = 'cpu' AND tags['host'] IS NOT NULL GROUP BY tags['host'] ORDER BY host
----
+------+---+------+
| host | n | top  |
+------+---+------+
| a    | 3 | 12.0 |
| b    | 2 | 91.0 |
+------+---+------+

-- readings of other formats have no measurement and no tags
SELECT count(*) AS n FROM readings WHERE sensor = 'sensor-0' AND measurement IS NULL AND tags IS NULL
----
+-----+
| n   |
+-----+
| 241 |
+-----+

-- first(value, time) and last(value, time): the earliest and the latest value, files and buffer
SELECT sensor, first(value, time) AS first, last(value, time) AS last FROM readings WHERE variable = 'temperature' GROUP BY sensor ORDER BY sensor
----
+----------+-------+-------+
| sensor   | first | last  |
+----------+-------+-------+
| sensor-0 | 20.0  | 99.0  |
| sensor-1 | 21.0  | 100.0 |
| sensor-2 | 22.0  | 101.0 |
+----------+-------+-------+

SELECT tags['host'] AS host, first(value, time) AS first, last(value, time) AS last FROM readings WHERE measurement = 'cpu' GROUP BY 1 ORDER BY 1
----
+------+-------+------+
| host | first | last |
+------+-------+------+
| a    | 10.0  | 12.0 |
| b    | 90.0  | 91.0 |
+------+-------+------+
