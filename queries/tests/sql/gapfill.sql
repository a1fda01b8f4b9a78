-- date_bin_gapfill: every 30-minute bin of the range for each host, the empty ones NULL; locf carries the last value forward, interpolate draws the line between known values (NULL after the last)
SELECT date_bin_gapfill(INTERVAL '30 minutes', time) AS t, tags['host'] AS host, avg(value) AS v, locf(avg(value)) AS carried, interpolate(avg(value)) AS line FROM readings WHERE measurement = 'cpu' AND time >= '2026-01-20T10:30:00Z' AND time < '2026-01-20T13:00:00Z' GROUP BY 1, 2 ORDER BY 2, 1
----
+----------------------+------+------+---------+--------+
| t                    | host | v    | carried | line   |
+----------------------+------+------+---------+--------+
| 2026-01-20T10:30:00Z | a    | 10.5 | 10.5    | 10.5   |
| 2026-01-20T11:00:00Z | a    |      | 10.5    | 10.875 |
| 2026-01-20T11:30:00Z | a    |      | 10.5    | 11.25  |
| 2026-01-20T12:00:00Z | a    |      | 10.5    | 11.625 |
| 2026-01-20T12:30:00Z | a    | 12.0 | 12.0    | 12.0   |
| 2026-01-20T10:30:00Z | b    | 90.5 | 90.5    | 90.5   |
| 2026-01-20T11:00:00Z | b    |      | 90.5    |        |
| 2026-01-20T11:30:00Z | b    |      | 90.5    |        |
| 2026-01-20T12:00:00Z | b    |      | 90.5    |        |
| 2026-01-20T12:30:00Z | b    |      | 90.5    |        |
+----------------------+------+------+---------+--------+

-- no other group; an inclusive upper bound includes its bin; bins before the data are NULL
SELECT date_bin_gapfill(INTERVAL '1 hour', time) AS t, count(*) AS n FROM readings WHERE time >= '2026-01-20T08:00:00Z' AND time <= '2026-01-20T13:00:00Z' GROUP BY 1 ORDER BY 1
----
+----------------------+-----+
| t                    | n   |
+----------------------+-----+
| 2026-01-20T08:00:00Z |     |
| 2026-01-20T09:00:00Z |     |
| 2026-01-20T10:00:00Z | 184 |
| 2026-01-20T11:00:00Z | 360 |
| 2026-01-20T12:00:00Z | 184 |
| 2026-01-20T13:00:00Z |     |
+----------------------+-----+

-- BETWEEN bounds, a group per sensor, an origin
SELECT sensor, date_bin_gapfill(INTERVAL '1 hour', time, TIMESTAMP '2026-01-20T00:30:00Z') AS t, round(max(value), 2) AS hi FROM readings WHERE variable = 'temperature' AND sensor IN ('sensor-0', 'sensor-1') AND time BETWEEN '2026-01-20T09:30:00Z' AND '2026-01-20T12:29:00Z' GROUP BY 1, 2 ORDER BY 1, 2
----
+----------+----------------------+------+
| sensor   | t                    | hi   |
+----------+----------------------+------+
| sensor-0 | 2026-01-20T09:30:00Z |      |
| sensor-0 | 2026-01-20T10:30:00Z | 20.9 |
| sensor-0 | 2026-01-20T11:30:00Z | 20.9 |
| sensor-1 | 2026-01-20T09:30:00Z |      |
| sensor-1 | 2026-01-20T10:30:00Z | 21.9 |
| sensor-1 | 2026-01-20T11:30:00Z | 21.9 |
+----------+----------------------+------+

-- the range must be bounded on both sides
SELECT date_bin_gapfill(INTERVAL '1 hour', time) AS t, count(*) FROM readings WHERE time >= '2026-01-20T08:00:00Z' GROUP BY 1
----
error: the upper bound (time < …) is missing

SELECT date_bin_gapfill(INTERVAL '1 hour', time) AS t, count(*) FROM readings GROUP BY 1
----
error: both bounds are missing

-- locf and date_bin_gapfill only in their place
SELECT locf(value) FROM readings
----
error: belongs in the GROUP BY

SELECT date_bin_gapfill(INTERVAL '1 hour', time) FROM readings WHERE time >= '2026-01-20T08:00:00Z' AND time < '2026-01-20T09:00:00Z'
----
error: belongs in the GROUP BY

SELECT date_bin_gapfill(INTERVAL '1 month', time) AS t, count(*) FROM readings WHERE time >= '2026-01-20T08:00:00Z' AND time < '2026-01-20T09:00:00Z' GROUP BY 1
----
error: not months

SELECT date_bin_gapfill(INTERVAL '1 second', time) AS t, count(*) FROM readings WHERE time >= '2000-01-01T00:00:00Z' AND time < '2026-01-20T09:00:00Z' GROUP BY 1
----
error: more than 10000000

SELECT date_bin_gapfill(INTERVAL '1 hour', time) AS t, interpolate(max(sensor)) FROM readings WHERE time >= '2026-01-20T08:00:00Z' AND time < '2026-01-20T09:00:00Z' GROUP BY 1
----
error: interpolate() needs a number
