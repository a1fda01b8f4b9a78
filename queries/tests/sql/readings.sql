-- everything, from files and buffer
SELECT count(*) AS n FROM readings
----

-- per variable over all sensors
SELECT variable, count(*) AS n, min(value) AS lo, max(value) AS hi FROM readings GROUP BY variable ORDER BY variable
----

-- the buffer's rows are visible
SELECT sensor, device, value FROM readings WHERE device = 'device-x' ORDER BY sensor
----

-- time filters prune files and still see the buffer
SELECT count(*) AS n FROM readings WHERE time >= '2026-01-20T12:30:00Z'
----

SELECT count(*) AS n FROM readings WHERE time BETWEEN '2026-01-20T10:30:00Z' AND '2026-01-20T10:39:59Z' AND variable = 'temperature'
----

-- date_bin: 30-minute averages for one sensor
SELECT date_bin(INTERVAL '30 minutes', time) AS bucket, round(avg(value), 3) AS avg FROM readings WHERE sensor = 'sensor-1' AND variable = 'humidity' GROUP BY 1 ORDER BY 1
----

-- top sensors by max temperature
SELECT sensor, max(value) AS m FROM readings WHERE variable = 'temperature' GROUP BY sensor ORDER BY m DESC LIMIT 2
----

-- schema of the table
SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'readings' ORDER BY ordinal_position
----

-- errors carry DataFusion's message
SELECT nope FROM readings
----
error: nope
