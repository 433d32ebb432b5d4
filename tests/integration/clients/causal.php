<?php
// Causal reads across connections, with PDO (emulated prepares, its default: text protocol;
// "pdo-server": ATTR_EMULATE_PREPARES=false, server-side prepared statements) or mysqli
// (real prepared statements): connection A writes (INSERT, UPDATE, DELETE, CREATE
// TABLE, a transaction), connection B reads it at once. Prints {"iterations": n, "stale": n}.
declare(strict_types=1);
[$_, $table, $iterations, $api] = $argv;
$iterations = (int) $iterations;
[$host, $port, $user, $pass, $db] = [getenv('PYPROXY_HOST'), (int) getenv('PYPROXY_PORT'),
    getenv('PYPROXY_USER'), getenv('PYPROXY_PASSWORD'), getenv('PYPROXY_DB')];

if ($api === 'pdo' || $api === 'pdo-server') {
    $connect = function () use ($host, $port, $user, $pass, $db, $api) {
        return new PDO("mysql:host=$host;port=$port;dbname=$db", $user, $pass,
            [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
             PDO::ATTR_EMULATE_PREPARES => $api === 'pdo']);
    };
    [$a, $b] = [$connect(), $connect()];
    $write = function (string $sql, array $args = []) use ($a): void {
        $a->prepare($sql)->execute($args);
    };
    // B's rows as a JSON string, or null when the read failed (e.g. no such table yet).
    $read = function (string $sql, array $args = []) use ($b): ?string {
        try {
            $st = $b->prepare($sql);
            $st->execute($args);
            return json_encode(array_map(fn ($r) => array_map('intval', $r),
                $st->fetchAll(PDO::FETCH_NUM)));
        } catch (PDOException $e) {
            return null;
        }
    };
    $begin = fn () => $a->beginTransaction();
    $commit = fn () => $a->commit();
} else {
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
    [$a, $b] = [new mysqli($host, $user, $pass, $db, $port), new mysqli($host, $user, $pass, $db, $port)];
    $write = function (string $sql, array $args = []) use ($a): void {
        $st = $a->prepare($sql);
        $st->execute($args);
        $st->close();
    };
    $read = function (string $sql, array $args = []) use ($b): ?string {
        try {
            $st = $b->prepare($sql);
            $st->execute($args ?: null);
            $rows = $st->get_result()->fetch_all(MYSQLI_NUM);
            $st->close();
            return json_encode(array_map(fn ($r) => array_map('intval', $r), $rows));
        } catch (mysqli_sql_exception $e) {
            return null;
        }
    };
    $begin = fn () => $a->begin_transaction();
    $commit = fn () => $a->commit();
}

$write("CREATE TABLE $table (id INT PRIMARY KEY, v INT NOT NULL)");
$sel = "SELECT v FROM $table WHERE id = ?";
$stale = 0;
for ($i = 0; $i < $iterations; $i++) {
    $write("INSERT INTO $table (id, v) VALUES (?, 0)", [$i]);
    if ($read($sel, [$i]) !== '[[0]]') { $stale++; }
    $write("UPDATE $table SET v = ? WHERE id = ?", [$i + 1, $i]);
    if ($read($sel, [$i]) !== '[[' . ($i + 1) . ']]') { $stale++; }
    if ($i % 2) {
        $write("DELETE FROM $table WHERE id = ?", [$i]);
        if ($read($sel, [$i]) !== '[]') { $stale++; }
    }
    if ($i % 10 === 0) {
        $begin();
        $write("INSERT INTO $table (id, v) VALUES (?, 7)", [-$i - 1]);
        $write("UPDATE $table SET v = 8 WHERE id = ?", [-$i - 1]);
        $commit();
        if ($read($sel, [-$i - 1]) !== '[[8]]') { $stale++; }
    }
    if ($i % 50 === 0) {
        $write("CREATE TABLE {$table}_$i (id INT)");
        if ($read("SELECT COUNT(*) FROM {$table}_$i") !== '[[0]]') { $stale++; }
        $write("DROP TABLE {$table}_$i");
    }
}
$write("DROP TABLE $table");
echo json_encode(['iterations' => $iterations, 'stale' => $stale]), "\n";
