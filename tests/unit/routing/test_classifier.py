"""Table tests for the statement classifier, the digest and the caches."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Any

import pytest

import proxy.routing.classifier as classifier_module
from proxy.compiled import is_compiled
from proxy.routing.classifier import (
    VALUE_PINS,
    Classification,
    Classifier,
    StatementKind,
)
from proxy.routing.digest import Hints, compute_digest, normalize, parse_hints
from proxy.routing.lru import LRUCache
from proxy.routing.tokens import regex_tokens, sqlparse_tokens

R = StatementKind.READ
W = StatementKind.WRITE

_C = "83868641912-28773972837-60736120486-75162659906-27563526494"
_P = "67847967377-48000963322-62604785301-91415491898-96926520291"

JDBC_PROBE = (
    "/* mysql-connector-java-8.0.33 (Revision: 7d6b0800528b6b25c68b52dc10d6c1c8429c100c) */"
    "SELECT  @@session.auto_increment_increment AS auto_increment_increment, "
    "@@character_set_client AS character_set_client, @@character_set_connection AS "
    "character_set_connection, @@character_set_results AS character_set_results, "
    "@@character_set_server AS character_set_server, @@collation_server AS collation_server, "
    "@@collation_connection AS collation_connection, @@init_connect AS init_connect, "
    "@@interactive_timeout AS interactive_timeout, @@license AS license, "
    "@@lower_case_table_names AS lower_case_table_names, @@max_allowed_packet AS "
    "max_allowed_packet, @@net_write_timeout AS net_write_timeout, @@performance_schema AS "
    "performance_schema, @@sql_mode AS sql_mode, @@system_time_zone AS system_time_zone, "
    "@@time_zone AS time_zone, @@transaction_isolation AS transaction_isolation, "
    "@@wait_timeout AS wait_timeout"
)

SYSBENCH_CREATE = (
    "CREATE TABLE sbtest1(\n  id INTEGER NOT NULL AUTO_INCREMENT,\n"
    "  k INTEGER DEFAULT '0' NOT NULL,\n  c CHAR(120) DEFAULT '' NOT NULL,\n"
    "  pad CHAR(60) DEFAULT '' NOT NULL,\n  PRIMARY KEY (id)\n) /*! ENGINE = innodb */"
)

PIN = {"pins_session": True}
DDL = {"is_ddl": True}
PREV = {"needs_previous_backend": True}
MULTI = {"is_multi_statement": True}

# (sql, expected kind, expected fields)
CASES: list[tuple[str, StatementKind, dict[str, Any]]] = [
    # --- sysbench oltp_*.lua: run phase ---
    ("SELECT c FROM sbtest1 WHERE id=4242", R, {"verb": "select"}),
    ("SELECT c FROM sbtest1 WHERE id BETWEEN 10 AND 109", R, {}),
    ("SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 10 AND 109", R, {}),
    ("SELECT c FROM sbtest1 WHERE id BETWEEN 10 AND 109 ORDER BY c", R, {}),
    ("SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 10 AND 109 ORDER BY c", R, {}),
    ("UPDATE sbtest1 SET k=k+1 WHERE id=4242", W, {"verb": "update"}),
    (f"UPDATE sbtest1 SET c='{_C}' WHERE id=4242", W, {}),
    ("DELETE FROM sbtest1 WHERE id=4242", W, {"verb": "delete"}),
    (f"INSERT INTO sbtest1 (id, k, c, pad) VALUES (4242, 5001, '{_C}', '{_P}')", W, {}),
    ("BEGIN", W, {}),
    ("COMMIT", W, {}),
    ("SELECT id, k, c, pad FROM sbtest1 WHERE k IN (10, 20, 30)", R, {}),
    ("SELECT count(k) FROM sbtest1 WHERE k BETWEEN 1 AND 10 OR k BETWEEN 20 AND 30", R, {}),
    # --- sysbench: prepare phase ---
    (SYSBENCH_CREATE, W, DDL),
    ("CREATE INDEX k_1 ON sbtest1(k)", W, DDL),
    (f"INSERT INTO sbtest1(k, c, pad) VALUES(5001, '{_C}', '{_P}'),(77, '{_C}', '{_P}')", W, {}),
    ("DROP TABLE IF EXISTS sbtest1", W, DDL),
    # --- SQLAlchemy 2 (mysql+pymysql / mariadb dialects) ---
    ("SELECT DATABASE()", R, {}),
    ("SELECT @@sql_mode", R, {"pins_session": False}),
    ("SELECT @@lower_case_table_names", R, {}),
    ("SHOW VARIABLES LIKE 'sql_mode'", R, {"verb": "show"}),
    ("SHOW VARIABLES LIKE 'lower_case_table_names'", R, {}),
    ("SELECT VERSION()", R, {}),
    ("SELECT @@transaction_isolation", R, {}),
    ("SELECT @@tx_isolation", R, {}),
    ("SELECT CAST('test plain returns' AS CHAR(60)) AS anon_1", R, {}),
    ("SHOW COLLATION", R, {}),
    ("SHOW CHARACTER SET", R, {}),
    ("SELECT users.id AS users_id, users.name AS users_name FROM users WHERE users.id = 5", R, {}),
    ("INSERT INTO users (name) VALUES ('x')", W, {}),
    ("ROLLBACK", W, {}),
    ("SHOW CREATE TABLE `users`", R, {}),
    (
        "SELECT COUNT(*) AS count_1 \nFROM (SELECT users.id AS users_id, users.name AS "
        "users_name \nFROM users) AS anon_1",
        R,
        {},
    ),
    ("SAVEPOINT sa_savepoint_1", W, {}),
    ("RELEASE SAVEPOINT sa_savepoint_1", W, {}),
    ("ROLLBACK TO SAVEPOINT sa_savepoint_1", W, {}),
    ("DESCRIBE `users`", R, {}),
    ("DESCRIBE `test`.`users`", R, {}),
    ("SHOW FULL TABLES FROM `test`", R, {}),
    ("SELECT table_name FROM information_schema.tables WHERE table_schema = 'test'", R, {}),
    ("UPDATE users SET name='y' WHERE users.id = 5", W, {}),
    ("DELETE FROM users WHERE users.id = 5", W, {}),
    (
        "SELECT users.id, users.name FROM users WHERE users.name IN ('a', 'b', 'c') "
        "ORDER BY users.id LIMIT 10 OFFSET 20",
        R,
        {},
    ),
    ("SELECT 1", R, {}),
    ("INSERT INTO users (name) VALUES ('x') RETURNING users.id", W, {}),
    # --- connector probes and session setup ---
    ("SELECT @@version_comment LIMIT 1", R, {}),
    (
        "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
        R,
        {
            "changes_session_state": True,
            "replay_sql": "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
        },
    ),
    ("SET NAMES 'utf8mb4'", R, {"changes_session_state": True}),
    ("SET autocommit=0", R, {"session_vars": ("autocommit",)}),
    ("SET autocommit=1", R, {}),
    ("SET AUTOCOMMIT = 0", R, {"changes_session_state": True}),
    ("SET @@autocommit = OFF", R, {}),
    ("SET SESSION autocommit = true", R, {}),
    ("SET autocommit='ON'", R, {}),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        R,
        {
            "changes_session_state": True,
            "session_vars": ("transaction_isolation",),
            "next_transaction_only": False,
        },
    ),
    ("SET character_set_results = NULL", R, {"session_vars": ("character_set_results",)}),
    ("SET sql_mode='STRICT_TRANS_TABLES'", R, {"session_vars": ("sql_mode",)}),
    ("SET time_zone = '+00:00'", R, {"replay_sql": "SET time_zone = '+00:00'"}),
    ("SET @@session.time_zone = 'UTC'", R, {"session_vars": ("time_zone",)}),
    ("SET LOCAL sql_mode = ''", R, {"changes_session_state": True}),
    ("SET SQL_SELECT_LIMIT=DEFAULT", R, {"changes_session_state": True}),
    (JDBC_PROBE, R, {"pins_session": False}),
    ("SELECT @@max_allowed_packet", R, {}),
    (
        "SET autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES'), "
        "session_track_schema=1",
        R,
        {
            "session_vars": ("autocommit", "sql_mode", "session_track_schema"),
        },
    ),
    ("SHOW WARNINGS", R, PREV),
    # --- transactions ---
    ("START TRANSACTION", W, {}),
    ("START TRANSACTION READ ONLY", R, {}),
    ("START TRANSACTION READ WRITE", W, {}),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT", W, {}),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", R, {}),
    ("BEGIN WORK", W, {}),
    ("COMMIT WORK", W, {}),
    ("COMMIT AND CHAIN", W, {}),
    ("COMMIT AND NO CHAIN", W, {}),
    ("ROLLBACK WORK", W, {}),
    ("ROLLBACK TO sp1", W, {}),
    ("XA START 'xid1'", W, {}),
    ("XA END 'xid1'", W, {}),
    ("XA PREPARE 'xid1'", W, {}),
    ("XA COMMIT 'xid1'", W, {}),
    ("XA ROLLBACK 'xid1'", W, {}),
    ("XA RECOVER", W, {}),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        W,
        {
            "next_transaction_only": True,
            "changes_session_state": False,
            "replay_sql": "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        },
    ),
    ("SET TRANSACTION READ ONLY", W, {"next_transaction_only": True}),
    ("SET SESSION TRANSACTION READ ONLY", R, {"session_vars": ("transaction_read_only",)}),
    ("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", W, {"changes_session_state": False}),
    ("SET @@session.transaction_isolation = 'READ-COMMITTED'", R, {"changes_session_state": True}),
    # --- CTEs ---
    ("WITH cte AS (SELECT id FROM t WHERE x = 1) SELECT * FROM cte", R, {"verb": "with"}),
    (
        "WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 10) "
        "SELECT n FROM seq",
        R,
        {},
    ),
    ("WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b", R, {}),
    (
        "WITH ids AS (SELECT id FROM t WHERE k = 5) UPDATE t SET k = 6 "
        "WHERE id IN (SELECT id FROM ids)",
        W,
        {},
    ),
    (
        "WITH old AS (SELECT id FROM t WHERE ts < NOW()) DELETE FROM t "
        "WHERE id IN (SELECT id FROM old)",
        W,
        {},
    ),
    ("INSERT INTO t2 (id) WITH c AS (SELECT id FROM t1) SELECT id FROM c", W, {}),
    ("WITH c AS (SELECT 1) INSERT INTO t SELECT * FROM c", W, {}),
    ("WITH c AS (SELECT 1) SELECT * FROM c FOR UPDATE", W, {}),
    ("WITH c AS (SELECT my_func(1) AS v) SELECT v FROM c", W, {}),
    ("(SELECT a FROM t1) UNION (SELECT a FROM t2)", R, {"verb": "select"}),
    # --- comments and hints ---
    ("/* pyproxy:writer */ SELECT * FROM t", R, {"hint_route": "writer"}),
    ("/* pyproxy:reader */ SELECT * FROM t", R, {"hint_route": "reader"}),
    ("/* pyproxy:server=replica2 */ SELECT * FROM t", R, {"hint_route": "replica2"}),
    (
        "SELECT * FROM t /* pyproxy:consistency=read_your_writes */",
        R,
        {"hint_consistency": "read_your_writes", "hint_route": None},
    ),
    (
        "/* pyproxy:reader pyproxy:consistency=eventual */ SELECT 1",
        R,
        {"hint_route": "reader", "hint_consistency": "eventual"},
    ),
    ("/* pyproxy:consistency=strong */ UPDATE t SET a = 1", W, {"hint_consistency": "strong"}),
    ("SELECT /* pyproxy:consistency=causal */ 1", R, {"hint_consistency": "causal"}),
    ("SELECT /* pyproxy:consistency=causal_global */ 1", R, {"hint_consistency": "causal_global"}),
    ("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t", R, {}),
    ("SELECT /*+ pyproxy:reader */ 1", R, {"hint_route": "reader"}),
    ("-- pyproxy:writer\nSELECT 1", R, {"hint_route": "writer"}),
    ("# a comment\nSELECT 1", R, {}),
    ("SELECT 1 -- trailing comment", R, {}),
    ("SELECT 1 # trailing", R, {}),
    ("SELECT '/* not a comment */', '-- nor this', '# nor this'", R, {}),
    ("/* a */ UPDATE t SET a = 1 /* b */", W, {}),
    ("/* pyproxy:consistency=bogus */ SELECT 1", R, {"hint_consistency": None}),
    ("SELECT 1 /* unterminated", R, {}),
    ("/* pyproxy:writer */ SELECT 1 /* pyproxy:server=db3 */", R, {"hint_route": "db3"}),
    # --- executable comments: their content is SQL ---
    ("/*!40101 SET NAMES utf8mb4 */", R, {"replay_sql": "SET NAMES utf8mb4"}),
    ("/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */", W, PIN),
    ("SELECT /*! STRAIGHT_JOIN */ a FROM t1, t2", R, {}),
    ("SELECT * FROM t /*!50000 FOR UPDATE */", W, {}),
    ("/*M!100100 SELECT 1 */", R, {}),
    ("SELECT 1 /*M!100000 FOR UPDATE */", W, {}),
    ("/*!80000 SET PERSIST max_connections = 100 */", W, {"changes_session_state": False}),
    ("CREATE TABLE t (a INT) /*!50100 PARTITION BY HASH (a) */", W, DDL),
    ("/*!40103 SET TIME_ZONE='+00:00' */", R, {"session_vars": ("time_zone",)}),
    ("SELECT 1 FROM DUAL WHERE 1 = 1 /*M!100500 AND 2 = 2 */", R, {}),
    # --- multi-statements ---
    ("SELECT 1; SELECT 2", R, MULTI),
    ("SELECT 1; UPDATE t SET a=1", W, MULTI),
    (
        "SET NAMES utf8mb4; SELECT 1",
        R,
        {"is_multi_statement": True, "replay_sql": "SET NAMES utf8mb4"},
    ),
    (
        "BEGIN; UPDATE t SET a=1; COMMIT",
        W,
        {"is_multi_statement": True},
    ),
    ("SELECT ';' AS x; SELECT 2", R, MULTI),
    ("SELECT 1 /* ; */", R, {"is_multi_statement": False}),
    ("SELECT 1 -- ; DELETE FROM t\n", R, {"is_multi_statement": False}),
    ("SELECT 1;", R, {"is_multi_statement": False}),
    ("SELECT 1;;SELECT 2;", R, MULTI),
    (
        "CREATE PROCEDURE p() BEGIN SELECT 1; UPDATE t SET a = 1; END",
        W,
        {"is_ddl": True, "is_multi_statement": False},
    ),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN IF NEW.a < 0 THEN "
        "SET NEW.a = 0; END IF; END; SELECT 1",
        W,
        {"is_ddl": True, "is_multi_statement": True},
    ),
    (
        "BEGIN NOT ATOMIC SELECT 1; END",
        W,
        {"is_multi_statement": False},
    ),
    ("SELECT 1; SET @x = 1", W, {"pins_session": True, "is_multi_statement": True}),
    ("CREATE TABLE t (begin INT, end INT); SET @x = 1", W, {"is_multi_statement": True, **PIN}),
    (
        "CREATE PROCEDURE p() BEGIN DECLARE x INT; SET x = (SELECT CASE WHEN a THEN 1 END "
        "FROM t); END; SELECT 1",
        W,
        {"is_multi_statement": True, "pins_session": False},
    ),
    (
        "SET autocommit=0; SELECT 1; SET time_zone='+01:00'",
        R,
        {
            "is_multi_statement": True,
            "replay_sql": "SET autocommit=0; SET time_zone='+01:00'",
        },
    ),
    # --- MySQL-only syntax ---
    ("SELECT * FROM t WHERE id = 1 FOR SHARE", W, {}),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE SKIP LOCKED", W, {}),
    ("SELECT * FROM t FOR UPDATE NOWAIT", W, {}),
    ("SELECT * FROM t FOR SHARE OF t NOWAIT", W, {}),
    ("SELECT * FROM t LOCK IN SHARE MODE", W, {}),
    ("TABLE t", R, {"verb": "table"}),
    ("TABLE t ORDER BY a LIMIT 10", R, {}),
    ("VALUES ROW(1, 2), ROW(3, 4)", R, {"verb": "values"}),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, {}),
    ("EXPLAIN ANALYZE UPDATE t SET a = 1", W, {}),
    ("EXPLAIN FORMAT=JSON SELECT * FROM t", R, {}),
    ("EXPLAIN FORMAT=TREE SELECT * FROM t", R, {}),
    ("EXPLAIN UPDATE t SET a = 1 WHERE id = 2", R, {}),
    ("EXPLAIN SELECT * FROM t", R, {}),
    ("EXPLAIN FOR CONNECTION 12", W, {}),
    ("SET PERSIST max_connections = 500", W, {"changes_session_state": False}),
    ("SET PERSIST_ONLY innodb_log_file_size = 1000", W, {}),
    ("SET GLOBAL max_connections = 500", W, {"changes_session_state": False}),
    ("SET @@GLOBAL.max_connections = 500", W, {"changes_session_state": False}),
    (
        "SELECT * FROM t AS t1 JOIN LATERAL (SELECT * FROM t2 WHERE t2.a = t1.a) AS d ON TRUE",
        R,
        {},
    ),
    ("SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM t", R, {}),
    ("SELECT a, SUM(b) OVER w FROM t WINDOW w AS (PARTITION BY a)", R, {}),
    ("SELECT * FROM JSON_TABLE('[1,2]', '$[*]' COLUMNS (id INT PATH '$')) AS jt", R, {}),
    ("SELECT * FROM (SELECT 1, 2) AS d (a, b)", R, {}),
    ("LOCK INSTANCE FOR BACKUP", W, PIN),
    ("SHOW REPLICA STATUS", W, {}),
    ("SHOW BINARY LOG STATUS", W, {}),
    ("SELECT doc->>'$.name' FROM t", R, {}),
    ("SELECT JSON_EXTRACT(doc, '$.a'), JSON_UNQUOTE(JSON_EXTRACT(doc, '$.b')) FROM t", R, {}),
    # --- MariaDB-only syntax ---
    ("SELECT NEXT VALUE FOR seq1", W, {"pins_session": False}),
    ("SELECT NEXTVAL(seq1)", W, {"pins_session": False}),
    ("SELECT PREVIOUS VALUE FOR seq1", W, PIN),
    ("SELECT LASTVAL(seq1)", W, PIN),
    ("SELECT SETVAL(seq1, 100)", W, {}),
    ("CREATE SEQUENCE seq1 START WITH 1 INCREMENT BY 1", W, DDL),
    ("INSERT INTO t (a) VALUES (1) RETURNING id", W, {}),
    ("DELETE FROM t WHERE a = 1 RETURNING id", W, {}),
    ("REPLACE INTO t (a) VALUES (1) RETURNING id", W, {}),
    ("SHOW SLAVE STATUS", W, {}),
    ("SHOW ALL SLAVES STATUS", W, {}),
    ("SHOW MASTER STATUS", W, {}),
    ("SHOW BINARY LOGS", W, {}),
    ("EXECUTE IMMEDIATE 'SELECT 1'", W, PIN),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE WAIT 5", W, {}),
    ("SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE NOWAIT", W, {}),
    ("ANALYZE SELECT * FROM t", R, {}),
    ("ANALYZE FORMAT=JSON UPDATE t SET a = 1", W, {"is_ddl": False}),
    ("ANALYZE TABLE t", W, DDL),
    ("SET STATEMENT max_statement_time=10 FOR SELECT * FROM t", R, {}),
    ("SET STATEMENT max_statement_time=10 FOR UPDATE t SET a = 1", W, {}),
    ("SELECT * FROM t FOR SYSTEM_TIME AS OF TIMESTAMP '2020-01-01 00:00:00'", R, {}),
    ("SELECT JSON_DETAILED(doc) FROM t", R, {}),
    ("SELECT * FROM seq_1_to_10", R, {}),
    ("SELECT MASTER_GTID_WAIT('0-1-100', 5)", R, {}),
    ("BACKUP STAGE START", W, PIN),
    ("SELECT x FROM t WHERE a = 1 INTERSECT SELECT x FROM t2", R, {}),
    # --- locking and session pinning ---
    ("SELECT GET_LOCK('job', 10)", W, {"pins_session": True, "pin_reason": "user-level lock"}),
    ("SELECT RELEASE_LOCK('job')", W, PIN),
    ("SELECT IS_USED_LOCK('job')", W, PIN),
    ("SELECT RELEASE_ALL_LOCKS()", W, PIN),
    ("DO GET_LOCK('job', 10)", W, PIN),
    ("DO SLEEP(1)", R, {"verb": "do"}),
    ("DO 1 + 1", R, {}),
    ("LOCK TABLES t READ", W, {"pins_session": True}),
    ("LOCK TABLES t1 WRITE, t2 READ LOCAL", W, PIN),
    ("UNLOCK TABLES", W, PIN),
    ("FLUSH TABLES WITH READ LOCK", W, PIN),
    ("FLUSH TABLES t1 FOR EXPORT", W, PIN),
    ("FLUSH PRIVILEGES", W, {"pins_session": False}),
    (
        "CREATE TEMPORARY TABLE tmp (id INT)",
        W,
        {"pins_session": True, "is_ddl": True},
    ),
    ("DROP TEMPORARY TABLE tmp", W, {"pins_session": True}),
    ("PREPARE stmt FROM 'SELECT * FROM t WHERE id = ?'", W, PIN),
    ("EXECUTE stmt USING @id", W, PIN),
    ("DEALLOCATE PREPARE stmt", W, PIN),
    ("DROP PREPARE stmt", W, {"pins_session": True, "is_ddl": False}),
    ("SET @x = 1", W, {"pins_session": True, "pin_reason": "user variable"}),
    ("SET @x := 1, @y = 2", W, PIN),
    ("SELECT @x := MAX(id) FROM t", W, PIN),
    ("SELECT @x", W, PIN),
    ("SELECT id INTO @x FROM t LIMIT 1", W, PIN),
    ("SELECT id FROM t LIMIT 1 INTO @x", W, PIN),
    ("SELECT * FROM t INTO OUTFILE '/tmp/t.csv'", W, {"pins_session": False}),
    ("SELECT a INTO DUMPFILE '/tmp/a' FROM t", W, {}),
    ("SELECT LAST_INSERT_ID()", W, {"pins_session": True, "pin_reason": "LAST_INSERT_ID()"}),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", W, PIN),
    ("SELECT FOUND_ROWS()", R, {"pins_session": False, **PREV}),
    ("SELECT ROW_COUNT()", R, {"pins_session": False, **PREV}),
    ("SELECT @@last_insert_id", W, PIN),
    ("SELECT @@identity", W, PIN),
    ("SELECT @@warning_count", R, {"pins_session": False, **PREV}),
    ("SELECT @@session.error_count", R, {"pins_session": False, **PREV}),
    ("SELECT @@autocommit", R, {}),
    ("SELECT @@global.read_only", R, {}),
    ("SET insert_id = 5", W, PIN),
    ("HANDLER t OPEN", W, PIN),
    ("HANDLER t READ FIRST", W, PIN),
    ("INSERT INTO t (a) VALUES (@x)", W, PIN),
    ("INSERT INTO log (msg) VALUES (LAST_INSERT_ID())", W, PIN),
    ("CALL p(@out)", W, PIN),
    ("CALL p(1)", W, {"pins_session": True, "pin_reason": "CALL", "changes_data": True}),
    ("GET DIAGNOSTICS CONDITION 1 @p = MESSAGE_TEXT", W, {"pins_session": True, **PREV}),
    # --- side-effect and unknown functions ---
    (
        "SELECT my_func(1)",
        W,
        {},
    ),
    ("SELECT db1.my_func(1)", W, {}),
    ("SELECT `my func`(1)", W, {}),
    ("SELECT SLEEP(0.1)", R, {}),
    ("SELECT UUID(), NOW(), RAND()", R, {}),
    ("SELECT COALESCE(a, 0), IFNULL(b, 1), IF(c, 1, 2), GREATEST(a, b) FROM t", R, {}),
    ("SELECT DATE_FORMAT(created_at, '%Y-%m'), COUNT(*) FROM t GROUP BY 1", R, {}),
    ("SELECT GROUP_CONCAT(name ORDER BY name SEPARATOR ', ') FROM t", R, {}),
    ("SELECT CONVERT(name USING utf8mb4) FROM t", R, {}),
    ("SELECT MATCH (title, body) AGAINST ('x' IN NATURAL LANGUAGE MODE) FROM articles", R, {}),
    ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM t2 WHERE t2.id = t.id)", R, {}),
    ("SELECT * FROM t USE INDEX (idx_a) WHERE a = 1", R, {}),
    ("SELECT * FROM t1 JOIN t2 USING (id)", R, {}),
    ("SELECT BENCHMARK(10, MD5('x'))", R, {}),
    # The client learns its backend connection's id: keep it (KILL of that id must reach it).
    ("SELECT CONNECTION_ID()", W, {"pins_session": True, "pin_reason": "CONNECTION_ID()"}),
    ("SELECT REPLACE(name, 'a', 'b'), INSERT(name, 1, 2, 'x') FROM t", R, {}),
    ("SELECT LEFT(name, 3), RIGHT(name, 2) FROM t", R, {}),
    ("SELECT ST_Distance_Sphere(POINT(1, 2), POINT(3, 4))", R, {}),
    ("SELECT SUBSTRING(name FROM 1 FOR 3) FROM t", R, {}),
    ("SELECT * FROM t WHERE a = ANY (SELECT b FROM t2)", R, {}),
    ("SELECT CASE WHEN a > 0 THEN 'p' ELSE 'n' END FROM t", R, {}),
    ("SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))", R, {}),
    ("SELECT EXTRACT(YEAR FROM d), TIMESTAMPDIFF(DAY, a, b) FROM t", R, {}),
    ("SELECT t1.update FROM t1", R, {}),
    ("SELECT * FROM t1 WHERE a IN (SELECT b FROM t2 FOR UPDATE)", W, {}),
    ("SELECT UPPER(name), LOWER(name), CONCAT_WS('-', a, b) FROM t", R, {}),
    ("SELECT AES_ENCRYPT('x', 'k'), SHA2('x', 256), UUID_TO_BIN(UUID())", R, {}),
    # --- DDL ---
    ("CREATE DATABASE shop", W, DDL),
    ("DROP DATABASE shop", W, DDL),
    ("ALTER TABLE t ADD COLUMN c INT", W, DDL),
    ("RENAME TABLE a TO b", W, DDL),
    ("TRUNCATE TABLE t", W, DDL),
    ("TRUNCATE t", W, DDL),
    ("CREATE VIEW v AS SELECT * FROM t", W, DDL),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", W, DDL),
    ("CREATE USER 'bob'@'%' IDENTIFIED BY 'pw'", W, DDL),
    ("DROP USER 'bob'@'%'", W, DDL),
    ("ALTER USER 'bob'@'%' IDENTIFIED BY 'pw2'", W, DDL),
    ("GRANT SELECT ON db.* TO 'bob'@'%'", W, DDL),
    ("REVOKE SELECT ON db.* FROM 'bob'@'%'", W, DDL),
    ("SET PASSWORD FOR 'bob'@'%' = 'x'", W, DDL),
    ("OPTIMIZE TABLE t", W, DDL),
    ("REPAIR TABLE t", W, DDL),
    ("CHECK TABLE t", W, {"is_ddl": False}),
    ("CREATE TABLE t2 AS SELECT * FROM t1", W, DDL),
    ("CREATE TABLE t2 LIKE t1", W, DDL),
    ("ALTER TABLE t ENGINE=InnoDB", W, DDL),
    ("DROP INDEX k_1 ON sbtest1", W, DDL),
    ("CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 1", W, DDL),
    ("DROP VIEW IF EXISTS v", W, DDL),
    # --- other writes, admin, not understood ---
    ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", W, {}),
    ("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t FIELDS TERMINATED BY ','", W, {}),
    ("PURGE BINARY LOGS TO 'mysql-bin.000010'", W, {}),
    ("RESET MASTER", W, {}),
    ("CHANGE MASTER TO MASTER_HOST='x'", W, {}),
    ("STOP SLAVE", W, {}),
    ("START SLAVE", W, {}),
    ("SHUTDOWN", W, {}),
    ("INSTALL PLUGIN x SONAME 'x.so'", W, {}),
    ("CALL mysql.rds_kill(12)", W, {"is_kill": False}),
    ("garbage in, garbage out", W, {}),
    ("SELEC 1", W, {}),
    ("1", W, {}),
    ("'just a string'", W, {}),
    (")", W, {}),
    ("", R, {"verb": "", "is_multi_statement": False}),
    ("   \n\t ", R, {}),
    ("/* only a comment */", R, {}),
    # --- SHOW, DESCRIBE, HELP ---
    ("SHOW TABLES", R, {}),
    ("SHOW DATABASES", R, {}),
    ("SHOW COLUMNS FROM t", R, {}),
    ("SHOW INDEX FROM t", R, {}),
    ("SHOW TABLE STATUS LIKE 't'", R, {}),
    ("SHOW GRANTS FOR CURRENT_USER()", R, {}),
    ("SHOW ERRORS", R, PREV),
    ("SHOW COUNT(*) WARNINGS", R, PREV),
    ("SHOW PROCESSLIST", W, {}),
    ("SHOW FULL PROCESSLIST", W, {}),
    ("SHOW ENGINE INNODB STATUS", W, {}),
    ("SHOW ENGINES", R, {}),
    ("SHOW GLOBAL STATUS LIKE 'Threads%'", R, {}),
    ("SHOW SESSION VARIABLES LIKE 'autocommit'", R, {}),
    ("SHOW CREATE DATABASE db", R, {}),
    ("SHOW TRIGGERS", R, {}),
    ("SHOW BINLOG EVENTS", W, {}),
    ("SHOW RELAYLOG EVENTS", W, {}),
    ("SHOW MASTER LOGS", W, {}),
    ("SHOW SLAVE HOSTS", W, {}),
    ("HELP 'SELECT'", R, {}),
    ("DESC t", R, {}),
    ("EXPLAIN t", R, {}),
    ("DESCRIBE SELECT * FROM t", R, {}),
    # --- session state ---
    ("USE shop", R, {"session_vars": ("database",), "replay_sql": "USE shop"}),
    ("USE `my-db`", R, {"replay_sql": "USE `my-db`"}),
    ("SET ROLE ALL", R, {"session_vars": ("role",)}),
    ("SET DEFAULT ROLE ALL TO 'bob'@'%'", W, {"changes_session_state": False}),
    ("SET sql_log_bin = 0", R, {"session_vars": ("sql_log_bin",)}),
    ("SET SESSION wait_timeout = 28800", R, {}),
    ("SET CHARACTER SET utf8mb4", R, {"changes_session_state": True}),
    ("SET CHARSET utf8mb4", R, {"changes_session_state": True}),
    ("SET NAMES DEFAULT", R, {"changes_session_state": True}),
    (
        "SET @@session.sql_mode = CONCAT(@@session.sql_mode, ',STRICT_ALL_TABLES')",
        R,
        {"session_vars": ("sql_mode",), "pins_session": False},
    ),
    ("SET sql_mode = (SELECT @x)", W, PIN),
    (
        "SET SESSION sql_mode = 'ANSI', GLOBAL max_connections = 10",
        W,
        {"changes_session_state": True, "session_vars": ("sql_mode",)},
    ),
    ("SET GLOBAL max_connections = 10, wait_timeout = 5", W, {"changes_session_state": False}),
    ("SET autocommit = @ac", W, {"pins_session": True}),
    ("SET autocommit = DEFAULT", W, {"pins_session": True}),
    ("SET time_zone = my_tz()", W, {}),
    # --- KILL ---
    ("KILL 123", W, {"is_kill": True, "kill_id": 123, "kill_variant": "CONNECTION"}),
    ("KILL CONNECTION 124", W, {"is_kill": True, "kill_id": 124, "kill_variant": "CONNECTION"}),
    ("KILL QUERY 456", W, {"is_kill": True, "kill_id": 456, "kill_variant": "QUERY"}),
    ("KILL HARD QUERY 42", W, {"kill_id": 42, "kill_variant": "QUERY"}),
    ("KILL QUERY ID 7", W, {"kill_id": 7, "kill_variant": "QUERY_ID"}),
    ("KILL USER 'bob'", W, {"kill_id": None, "kill_variant": "USER"}),
    ("/* c */ KILL 5", W, {"is_kill": True, "kill_id": 5, "kill_variant": "CONNECTION"}),
    ("kill soft connection 8;", W, {"kill_id": 8, "kill_variant": "CONNECTION"}),
    ("KILL HARD 9", W, {"kill_id": 9, "kill_variant": "CONNECTION"}),
    ("KILL CONNECTION_ID()", W, {"is_kill": True, "kill_id": None, "kill_variant": "CONNECTION"}),
    ("SELECT 1; KILL 5", W, {"is_kill": True, "is_multi_statement": True}),
    # --- quoting and odd but valid text ---
    ("SELECT 'a' 'b'", R, {}),
    ("SELECT * FROM t WHERE name = 'O\\'Brien'", R, {}),
    ("SELECT * FROM t WHERE name = 'it''s; DELETE FROM t'", R, {"is_multi_statement": False}),
    ('SELECT "double; quoted"', R, {"is_multi_statement": False}),
    ("SELECT `weird;name` FROM t", R, {"is_multi_statement": False}),
    ("select * from T where ID=1", R, {}),
    ("SELECT 1 UNION SELECT 2 UNION ALL SELECT 3", R, {}),
    ("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = t2.a", W, {}),
    ("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id", W, {}),
    ("INSERT INTO t (a) SELECT a FROM t2 ON DUPLICATE KEY UPDATE a = VALUES(a)", W, {}),
    ("INSERT IGNORE INTO t VALUES (1)", W, {}),
    ("SELECT SQL_NO_CACHE * FROM t", R, {}),
    ("SELECT HIGH_PRIORITY STRAIGHT_JOIN * FROM t1 STRAIGHT_JOIN t2 ON (t1.a = t2.a)", R, {}),
    ("SELECT * FROM t PARTITION (p0, p1)", R, {}),
    ("SELECT ?, ? FROM t", R, {}),
    # READ must also hold for a session with NO_BACKSLASH_ESCAPES, where this is a DELETE.
    ("SELECT 'a\\'; DELETE FROM t; -- '", W, {"is_multi_statement": False}),
    ("SELECT * FROM t WHERE doc = '{\\\"a\\\": 1}'", R, {}),
    ('SELECT "f"(1)', W, {}),  # ANSI_QUOTES: a quoted stored function name
    # Lexing traps: MySQL ends a number at a decimal point or exponent (1.5INTO is 1.5 INTO);
    # '--' without a space is two minus signs (sqlparse reads a comment); sqlparse lexes
    # '-@' as one operator.
    ("SELECT 1.5INTO OUTFILE '/tmp/x'", W, {}),
    ("SELECT a--b FROM t; DELETE FROM t", W, {"is_multi_statement": True}),
    ("SELECT a-@x FROM t", W, PIN),
    ("SELECT `a--b`, 1--1 FROM t", R, {}),
    # --- other ORMs: Django, Rails, Hibernate, Laravel ---
    ("SELECT @@SQL_AUTO_IS_NULL", R, {}),
    (
        "SELECT `app_item`.`id`, `app_item`.`name` FROM `app_item` WHERE `app_item`.`id` = 3 "
        "LIMIT 21",
        R,
        {},
    ),
    ("SELECT (1) AS `a` FROM `app_item` WHERE `app_item`.`name` = 'x' LIMIT 1", R, {}),
    (
        "SET @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), "
        "',NO_AUTO_VALUE_ON_ZERO'), @@SESSION.sql_auto_is_null = 0, "
        "@@SESSION.wait_timeout = 2147483",
        R,
        {"session_vars": ("sql_mode", "sql_auto_is_null", "wait_timeout")},
    ),
    ("SELECT `users`.* FROM `users` WHERE `users`.`id` = 1 LIMIT 1", R, {}),
    ("select next_val as id_val from hibernate_sequence for update", W, {}),
    ("update hibernate_sequence set next_val= 2 where next_val=1", W, {}),
    ("select * from `users` where `email` = 'a@b.c' limit 1", R, {"pins_session": False}),
    ("SELECT İ FROM t WHERE a = 'ß'", R, {}),
]


# May the statement have changed data or schema (changes_data)? After one that may, reads
# (read-your-writes, causal) must see its commit; those that cannot must not make reads pay.
DATA_CASES: list[tuple[str, bool]] = [
    ("INSERT INTO c (tag) VALUES ('x')", True),
    ("INSERT INTO c (tag) VALUES ('x') RETURNING id", True),
    ("REPLACE INTO c (tag) VALUES ('x') RETURNING id", True),
    ("WITH x AS (SELECT 1 AS v) INSERT INTO c (tag) SELECT v FROM x", True),
    ("SET STATEMENT max_statement_time=10 FOR INSERT INTO c (tag) VALUES ('x')", True),
    ("SET STATEMENT max_statement_time=10 FOR SELECT * FROM c", False),
    ("BEGIN NOT ATOMIC INSERT INTO c (tag) VALUES ('x'); END", True),
    ("SELECT ins_f('x')", True),
    ("DO ins_f('x')", True),
    ("SELECT demo_db.ins_f('x')", True),
    ("SELECT `ins_f`('x')", True),
    ("SET @x = ins_f('x')", True),
    ("SELECT NEXT VALUE FOR s", True),
    ("SELECT nextval(s)", True),
    ("CALL p(1)", True),
    ("EXECUTE IMMEDIATE 'INSERT INTO c (tag) VALUES (?)' USING 'x'", True),
    ("EXECUTE p1 USING @t", True),
    ("LOAD DATA INFILE '/tmp/x' INTO TABLE c", True),
    ("CREATE TABLE t (a INT)", True),
    ("CREATE TEMPORARY TABLE tt (a INT)", True),
    ("FLUSH TABLES", True),
    ("SELECT 1; INSERT INTO c (tag) VALUES ('x')", True),
    ("FROBNICATE the table", True),  # not understood: the safe side
    ("PREPARE p1 FROM 'INSERT INTO c (tag) VALUES (?)'", False),
    ("DEALLOCATE PREPARE p1", False),
    ("SELECT 1", False),
    ("SELECT @x := 1", False),
    ("SET @x = 1", False),
    ("SET sql_mode = ''", False),
    ("SET autocommit = 0", False),
    ("SELECT GET_LOCK('a', 0)", False),
    ("SELECT `GET_LOCK`('a', 0)", False),
    ("SELECT LAST_INSERT_ID()", False),
    ("SELECT * FROM c FOR UPDATE", False),
    ("SELECT * FROM c INTO OUTFILE '/tmp/x'", False),
    ("DO SLEEP(1)", False),
    ("BEGIN", False),
    ("START TRANSACTION", False),
    ("COMMIT", False),  # the transaction's writes already said so
    ("LOCK TABLES c READ", False),
    ("UNLOCK TABLES", False),
    ("SHOW SLAVE STATUS", False),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", False),
    ("USE demo_db", False),
]


@pytest.mark.parametrize(("sql", "changes"), DATA_CASES, ids=[c[0][:60] for c in DATA_CASES])
def test_changes_data(sql: str, changes: bool, tokenizer: str) -> None:
    classifier = Classifier(tokenizer="regex" if tokenizer == "regex" else "sqlparse")
    assert classifier.classify(sql)[1].changes_data is changes


# Session state a statement may leave on its backend connection that the proxy cannot
# replay: the session is pinned there (and its connection is reset before anyone else's use).
PIN_CASES: list[tuple[str, str]] = [
    ("CALL p_state()", "CALL"),
    ("CALL demo_db.p(@x, @y)", "CALL"),
    ("SELECT ins_f('x')", "stored function"),
    ("DO ins_f('x')", "stored function"),
    ("SELECT demo_db.f(1)", "stored function"),
    ("SELECT `f`(1)", "stored function"),
    ("SELECT `demo_db`.`f`(1)", "stored function"),
    ('SELECT "f"(1)', "stored function"),  # ANSI_QUOTES
    ("SELECT `GET_LOCK`('probe3_lock', 0)", "user-level lock"),
    ("SELECT `get_lock`('a', 0)", "user-level lock"),
    ("SELECT `RELEASE_LOCK`('a')", "user-level lock"),
    ("SELECT `LAST_INSERT_ID`()", "LAST_INSERT_ID()"),
    ("SELECT `CONNECTION_ID`()", "CONNECTION_ID()"),
    ("SET sql_mode = f()", "stored function"),
]


@pytest.mark.parametrize(("sql", "reason"), PIN_CASES, ids=[c[0][:60] for c in PIN_CASES])
def test_pins(sql: str, reason: str, tokenizer: str) -> None:
    classifier = Classifier(tokenizer="regex" if tokenizer == "regex" else "sqlparse")
    c = classifier.classify(sql)[1]
    assert c.kind is W and c.pins_session and c.pin_reason == reason, c


@pytest.mark.parametrize(
    ("sql", "value_only"),
    [
        ("SET @x = 1", True),
        ("SELECT LAST_INSERT_ID()", True),
        ("SELECT CONNECTION_ID()", True),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t", True),
        ("SELECT PREVIOUS VALUE FOR s", True),
        ("PREPARE p FROM 'SELECT 1'", True),
        ("SET autocommit = @v", True),
        ("SET autocommit = DEFAULT", True),
        ("SET insert_id = 5", True),
        ("SET last_insert_id = 5", True),
        ("SELECT GET_LOCK('a', 0)", False),
        ("SELECT `GET_LOCK`('a', 0)", False),
        ("LOCK TABLES t READ", False),
        ("CALL p()", False),
        ("SELECT f()", False),
        ("EXECUTE IMMEDIATE 'SELECT 1'", False),
        ("CREATE TEMPORARY TABLE tt (a INT)", False),
    ],
)
def test_value_pins(sql: str, value_only: bool) -> None:
    """VALUE_PINS names the reasons the classifier gives for state a reset clears."""
    c = Classifier().classify(sql)[1]
    assert c.pins_session
    assert (c.pin_reason in VALUE_PINS) is value_only, c.pin_reason


def _case_id(case: tuple[str, StatementKind, dict[str, Any]]) -> str:
    return case[0][:60].replace("\n", " ") or "<empty>"


def test_table_size() -> None:
    assert len(CASES) >= 170
    assert len({sql for sql, _, _ in CASES}) == len(CASES), "duplicate statements"


@pytest.fixture(params=["sqlparse", "regex"])
def tokenizer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(("sql", "kind", "fields"), CASES, ids=[_case_id(c) for c in CASES])
def test_classify(sql: str, kind: StatementKind, fields: dict[str, Any], tokenizer: str) -> None:
    classifier = Classifier(tokenizer="regex" if tokenizer == "regex" else "sqlparse")
    digest, c = classifier.classify(sql)
    assert c.kind is kind, c
    for name, expected in fields.items():
        assert getattr(c, name) == expected, name
    # Pinning always goes with WRITE: the pinned backend is the writer; so does a data change.
    assert not c.pins_session or c.kind is W
    assert not c.changes_data or c.kind is W
    # The second time comes from the exact-string cache, unchanged.
    assert classifier.classify(sql) == (digest, c)
    assert classifier.exact_hits == 1


@pytest.mark.parametrize("sql", [c[0] for c in CASES], ids=[_case_id(c) for c in CASES])
def test_tokenizers_agree(sql: str) -> None:
    with_sqlparse = Classifier(tokenizer="sqlparse").classify(sql)
    assert with_sqlparse == Classifier(tokenizer="regex").classify(sql)


# --- digest ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT c FROM sbtest1 WHERE id=42", "select c from sbtest1 where id=?"),
        ("SELECT 'a', \"b\", 1.5, -2, 1e10, .5, 0x1F, 0b101", "select ?, ?, ?, ?, ?, .?, ?, ?"),
        ("SELECT 1abc, 0x1g, 1e, 1.5INTO @x", "select 1abc, 0x1g, 1e, ?into @x"),
        ("SELECT X'ff', _utf8mb4'x', N'y'", "select x?, _utf8mb4?, n?"),
        ("select  *\n\tfrom   t", "select * from t"),
        ("SELECT * FROM t WHERE id = -5 AND k = +3", "select * from t where id = ? and k = ?"),
        ("SELECT a-1, a - 1, f(-1)", "select a-?, a - ?, f(?)"),
        ("SELECT 1--1", "select ?--?"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "select * from t where id in (?,...)"),
        ("INSERT INTO t VALUES (1,'a'),(2,'b'), (3, 'c');", "insert into t values (?,...)"),
        ("INSERT INTO t VALUES (1),(2)", "insert into t values (?,...)"),
        ("SELECT * FROM t WHERE id IN (7)", "select * from t where id in (?)"),
        ("SELECT `MixedCase`.Col FROM `T`", "select `MixedCase`.col from `T`"),
        ("SELECT 'it''s -- x', '/* y */', \"#z\"", "select ?, ?, ?"),
        ("SELECT 'a\\'b', 'c\\\\'", "select ?, ?"),
        ("/* c1 */ SELECT 1 -- c2\n # c3", "select ?"),
        ("/*!40101 SET NAMES utf8 */;", "set names utf8"),
        ("/*M!100100 SELECT 1 */", "select ?"),
        ("SELECT 'unterminated", "select ?"),
        ("SELECT sbtest1.c, t2x.a1 FROM sbtest1", "select sbtest1.c, t2x.a1 from sbtest1"),
        ("SELECT İx FROM `İ` WHERE a='b' -- c", "select i̇x from `İ` where a=?"),
        ("", ""),
        ("  ;  ", ""),
    ],
)
def test_digest_text(sql: str, text: str) -> None:
    assert compute_digest(sql).text == text


def test_same_digest_for_other_literals() -> None:
    a = compute_digest("SELECT * FROM t WHERE id IN (1,2,3) AND name = 'x'")
    b = compute_digest("select *   from t where id in (4, 5) and name = 'yy'")
    assert a == b
    assert a.id == b.id


def test_different_digest_for_other_structure() -> None:
    a = compute_digest("SELECT c FROM sbtest1 WHERE id=1")
    b = compute_digest("SELECT c FROM sbtest1 WHERE k=1")
    c = compute_digest("SELECT c FROM sbtest2 WHERE id=1")
    assert len({a.id, b.id, c.id}) == 3


def test_digest_hash_is_stable() -> None:
    # Hard-coded: a per-process salt (like hash()) would change it.
    d = compute_digest("SELECT c FROM sbtest1 WHERE id=42")
    assert d.hex == "0xE3E4809803C64D17"
    assert d.id == 0xE3E4809803C64D17
    expected = hashlib.blake2b(d.text.encode(), digest_size=8).hexdigest().upper()
    assert d.hex == "0x" + expected
    assert compute_digest("SELECT c FROM sbtest1 WHERE id=7").hex == d.hex


def test_digest_comments_and_hints() -> None:
    d = compute_digest("/* pyproxy:server=DB-1 */ SELECT 1 -- pyproxy:consistency=strong\n")
    assert d.text == "select ?"
    assert d.comments == ("/* pyproxy:server=DB-1 */", "-- pyproxy:consistency=strong")
    assert d.hints == Hints(route="DB-1", consistency="strong")
    assert compute_digest("SELECT 1").comments == ()
    assert compute_digest("SELECT 1").hints == Hints()


def test_executable_comment_is_code_not_comment() -> None:
    d = compute_digest("/*!40101 SET NAMES utf8 */ /* plain */")
    assert d.text == "set names utf8"
    assert d.comments == ("/* plain */",)


def test_parse_hints_last_wins() -> None:
    assert parse_hints(["/* pyproxy:reader */", "/* PYPROXY:WRITER */"]).route == "writer"
    assert parse_hints(["/* nothing */"]) == Hints()


def test_normalize_matches_compute_digest() -> None:
    sql = "/* x */ SELECT a FROM t WHERE b = 'c'"
    assert normalize(sql) == (compute_digest(sql).text, compute_digest(sql).comments)


# --- caches -------------------------------------------------------------------------------


def _workload() -> list[str]:
    """10,000 statements over 500 digests, each digest with 20 sets of literals."""
    shapes = [
        "SELECT c FROM sbtest{t} WHERE id={i}",
        "SELECT c FROM sbtest{t} WHERE id BETWEEN {i} AND {j} ORDER BY c",
        "UPDATE sbtest{t} SET k=k+1 WHERE id={i}",
        "DELETE FROM sbtest{t} WHERE id={i}",
        "INSERT INTO sbtest{t} (id, k, c, pad) VALUES ({i}, {j}, 'c{i}', 'p{j}')",
        "SELECT @@session.autocommit, c FROM sbtest{t} WHERE id={i}",
        "/* pyproxy:server=s{i} */ SELECT k FROM sbtest{t} WHERE id IN ({i}, {j})",
        "SELECT SUM(k) FROM sbtest{t} WHERE id BETWEEN {i} AND {j}",
        "SELECT k FROM sbtest{t} WHERE id={i} FOR UPDATE",
        "SELECT name FROM users{t} WHERE name = 'n{i}' LIMIT {j}",
    ]
    out = []
    for rep in range(20):
        for t in range(50):
            for shape in shapes:
                i = rep * 1000 + t
                out.append(shape.format(t=t, i=i, j=i + rep + 1))
    return out


def test_sqlparse_called_once_per_distinct_digest() -> None:
    statements = _workload()
    assert len(statements) == 10_000
    digests = {compute_digest(s).text for s in statements}
    assert len(digests) == 500
    assert len(set(statements)) == 10_000  # the exact-string cache can't help
    classifier = Classifier(cache_size=10_000)
    for sql in statements:
        classifier.classify(sql)
    assert classifier.sqlparse_calls <= 500
    assert classifier.sqlparse_calls == 500
    assert classifier.digest_misses == 500
    assert classifier.digest_hits == 10_000 - 500
    assert classifier.exact_hits == 0
    for sql in statements[:100]:
        classifier.classify(sql)
    assert classifier.exact_hits == 100
    assert classifier.sqlparse_calls == 500
    # Each statement kept its own hint although the digest (and analysis) is shared.
    _, c = classifier.classify(
        "/* pyproxy:server=other */ SELECT k FROM sbtest3 WHERE id IN (1, 2)"
    )
    assert c.hint_route == "other"
    assert classifier.sqlparse_calls == 500


def test_digest_cache_is_bounded_and_can_be_shared() -> None:
    shared: LRUCache[str, Any] = LRUCache(10)
    a = Classifier(digest_cache=shared)
    b = Classifier(digest_cache=shared)
    for n in range(50):
        a.classify(f"SELECT c FROM t{n} WHERE id = 1")
    assert len(shared) == 10
    b.classify("SELECT c FROM t49 WHERE id = 2")
    assert b.digest_hits == 1
    assert b.sqlparse_calls == 0


def test_classification_comes_from_the_digest() -> None:
    classifier = Classifier()
    _, first = classifier.classify("SELECT c FROM t WHERE id = 1")
    _, second = classifier.classify("SELECT c FROM t WHERE id = 2")
    assert second is first  # the cached per-digest object, not a new analysis
    assert classifier.sqlparse_calls == 1


def test_hints_do_not_leak_through_the_cache() -> None:
    classifier = Classifier()
    d1, c1 = classifier.classify("/* pyproxy:reader */ SELECT c FROM t WHERE id = 1")
    d2, c2 = classifier.classify("SELECT c FROM t WHERE id = 2")
    d3, c3 = classifier.classify("/* pyproxy:writer */ SELECT c FROM t WHERE id = 3")
    d4, c4 = classifier.classify("SELECT c FROM t WHERE id = 4 /* pyproxy:consistency=strong */")
    assert d1.id == d2.id == d3.id == d4.id
    assert classifier.sqlparse_calls == 1
    assert (c1.hint_route, c2.hint_route, c3.hint_route, c4.hint_route) == (
        "reader",
        None,
        "writer",
        None,
    )
    assert c4.hint_consistency == "strong"
    assert c1.hint_consistency is None
    assert d2.comments == () and d2.hints == Hints()
    # And the exact-string cache keeps each statement's own hints.
    assert classifier.classify("SELECT c FROM t WHERE id = 2")[1].hint_route is None
    assert classifier.classify("/* pyproxy:reader */ SELECT c FROM t WHERE id = 1")[1] == c1


@pytest.mark.parametrize("exact_cache_size", [1, 10_000])
def test_set_autocommit_values_do_not_collide(exact_cache_size: int) -> None:
    classifier = Classifier(exact_cache_size=exact_cache_size)
    sequence = [
        "SET autocommit=0",
        "SET autocommit=1",
        "SET autocommit=0",
        "SET autocommit = 1",
        "SET autocommit='OFF'",
        "SET autocommit=ON",
        "set AUTOCOMMIT=0",
    ]
    ids = set()
    for sql in sequence:
        digest, c = classifier.classify(sql)
        ids.add(digest.id)
        assert c.replay_sql == sql
    assert len(ids) == 3  # 'autocommit=?' (0, 1, 'OFF'), 'autocommit = ?', 'autocommit=on'
    assert classifier.sqlparse_calls == len(ids)


def test_literals_in_set_kill_and_use_are_per_statement() -> None:
    classifier = Classifier()
    _, a = classifier.classify("SET time_zone = '+00:00'")
    _, b = classifier.classify("SET time_zone = '+01:00'")
    assert (a.replay_sql, b.replay_sql) == ("SET time_zone = '+00:00'", "SET time_zone = '+01:00'")
    _, k1 = classifier.classify("KILL 11")
    _, k2 = classifier.classify("KILL 12")
    assert (k1.kill_id, k2.kill_id) == (11, 12)
    _, u = classifier.classify("/* pyproxy:writer */ USE `Shop`")
    assert u.replay_sql == "USE `Shop`"
    assert u.hint_route == "writer"
    assert classifier.sqlparse_calls == 3


def test_long_statements_skip_the_exact_cache() -> None:
    classifier = Classifier(max_exact_sql_length=100)
    sql = "SELECT * FROM t WHERE a IN (" + ", ".join(str(n) for n in range(100)) + ")"
    classifier.classify(sql)
    classifier.classify(sql)
    assert classifier.exact_hits == 0
    assert classifier.digest_hits == 1


# monkeypatch cannot reach into a compiled module (its calls are bound at build time); these
# two run in the interpreted unit tier (`make unit-pure`), the safety net is the same code.
_interpreted_only = pytest.mark.skipif(
    is_compiled(classifier_module), reason="compiled classifier: run by `make unit-pure`"
)


@_interpreted_only
def test_classifier_error_is_a_safe_write(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.routing.classifier as module

    def broken(tokens: list[str]) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "_classify_tokens", broken)
    _, c = Classifier().classify("SELECT 1")
    assert c == Classification(W, changes_data=True)


@_interpreted_only
def test_per_statement_failure_is_a_safe_write(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.routing.classifier as module

    def broken(sql: str) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "raw_statements", broken)
    _, c = Classifier().classify("SET NAMES utf8mb4")
    assert c.kind is W and c.pins_session and c.changes_data


def test_classification_defaults() -> None:
    c = Classification(R)
    assert c.is_read
    assert not c.pins_session and c.hint_route is None


def test_random_text_is_safe_and_tokenizers_agree() -> None:
    """Fuzz: never raises; both tokenizers and the raw splitter agree on garbage too."""
    from proxy.routing.classifier import _classify_tokens
    from proxy.routing.tokens import raw_statements, split_statements

    pieces = [
        "SELECT",
        "SET",
        "USE",
        "KILL",
        "autocommit",
        "=",
        "0",
        "1",
        "'a;b'",
        '"x"',
        "`q;`",
        ";",
        "(",
        ")",
        ",",
        "@x",
        "@@session.x",
        "--",
        "-- ",
        "#",
        "/*",
        "*/",
        "/*!",
        "/*M!1",
        "\\",
        "'",
        '"',
        "`",
        "\n",
        " ",
        "BEGIN",
        "END",
        "CREATE",
        "PROCEDURE",
        "NAMES",
        "f",
        "FOR",
        "UPDATE",
        "x'1f'",
        "1.5e3",
        "-",
        "+",
        "İ",
        "?",
        "%s",
        "WITH",
        "AS",
        "INTO",
    ]
    rng = random.Random(1234)
    classifier = Classifier()
    for _ in range(3000):
        sql = "".join(rng.choice(pieces) + rng.choice(("", " ")) for _ in range(rng.randint(0, 12)))
        digest, c = classifier.classify(sql)
        assert c.kind in (R, W)
        a = _classify_tokens(regex_tokens(digest.text))[0]
        b = _classify_tokens(sqlparse_tokens(digest.text))[0]
        assert replace(a, verb="") == replace(b, verb=""), sql
        assert len(split_statements(regex_tokens(digest.text))) == len(raw_statements(sql)), sql


# --- LRU ---------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # refreshes a
    cache.put("c", 3)  # evicts b
    assert "b" not in cache
    assert cache.get("a") == 1 and cache.get("c") == 3
    assert cache.get("b") is None
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        LRUCache(0)


def test_classify_query_matches_classify_and_decodes_once() -> None:
    classifier = Classifier()
    for sql in ("SELECT c FROM t WHERE id=7", "UPDATE t SET a = 'é' WHERE id = 1", "SET @x = 1"):
        payload = b"\x03" + sql.encode()
        text, digest, c = classifier.classify_query(payload)
        assert text == sql
        assert (digest, c) == Classifier().classify(sql)
        hits = classifier.exact_hits
        again = classifier.classify_query(payload)
        assert classifier.exact_hits == hits + 1
        assert again[0] is text  # the cached text: no second decode


def test_classify_query_cache_is_bounded() -> None:
    classifier = Classifier(exact_cache_size=2)
    for n in range(5):
        classifier.classify_query(b"\x03SELECT %d" % n)
    assert len(classifier.payload_cache.data) == 2
