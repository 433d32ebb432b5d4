<?php
// Drives PDO MySQL (real server-side prepares) through the endpoint in $PYPROXY_*.
// Prints one JSON object; any uncaught exception exits non-zero.
declare(strict_types=1);

$table = $argv[1];
$dsn = sprintf('mysql:host=%s;port=%s;dbname=%s;charset=utf8mb4',
    getenv('PYPROXY_HOST'), getenv('PYPROXY_PORT'), getenv('PYPROXY_DB'));
$pdo = new PDO($dsn, getenv('PYPROXY_USER'), getenv('PYPROXY_PASSWORD'), [
    PDO::ATTR_EMULATE_PREPARES => false,
    PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
    PDO::ATTR_TIMEOUT => 10,
]);
$out = ['emulate_prepares' => (bool) $pdo->getAttribute(PDO::ATTR_EMULATE_PREPARES)];

$pdo->exec("CREATE TABLE $table (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40),
    n INT NULL, data LONGBLOB NULL) CHARSET=utf8mb4");

// One prepared INSERT, executed with bound values, a NULL and a LOB stream.
$ins = $pdo->prepare("INSERT INTO $table (name, n, data) VALUES (:name, :n, :data)");
$ids = [];
foreach ([['one', 1], ['two 🐬', null], ['three', 3]] as [$name, $n]) {
    $ins->bindValue(':name', $name, PDO::PARAM_STR);
    $ins->bindValue(':n', $n, $n === null ? PDO::PARAM_NULL : PDO::PARAM_INT);
    $ins->bindValue(':data', null, PDO::PARAM_NULL);
    $ins->execute();
    $ids[] = (int) $pdo->lastInsertId();
}
$lob = random_bytes(512 * 1024);
$stream = fopen('php://memory', 'r+b');
fwrite($stream, $lob);
rewind($stream);
$ins->bindValue(':name', 'lob', PDO::PARAM_STR);
$ins->bindValue(':n', 4, PDO::PARAM_INT);
$ins->bindParam(':data', $stream, PDO::PARAM_LOB);
$ins->execute();
$ids[] = (int) $pdo->lastInsertId();
$out['ids'] = $ids;
$out['insert_row_count'] = $ins->rowCount();

$sel = $pdo->prepare("SELECT id, name, n FROM $table WHERE id <> ? ORDER BY id");
$sel->execute([$ids[3]]);
$out['rows'] = $sel->fetchAll(PDO::FETCH_NUM);
$blob = $pdo->prepare("SELECT data, LENGTH(data) FROM $table WHERE id = ?");
$blob->execute([$ids[3]]);
[$data, $len] = $blob->fetch(PDO::FETCH_NUM);
$out['lob'] = ['sent' => hash('sha256', $lob), 'received' => hash('sha256', $data),
    'length' => $len];

$upd = $pdo->prepare("UPDATE $table SET n = COALESCE(n, 0) + 10 WHERE id IN (?, ?)");
$upd->execute([$ids[0], $ids[1]]);
$out['update_row_count'] = $upd->rowCount();

// A transaction rolled back, then one committed.
$pdo->beginTransaction();
$pdo->prepare("DELETE FROM $table")->execute();
$out['in_tx'] = $pdo->inTransaction();
$pdo->rollBack();
$pdo->beginTransaction();
$pdo->prepare("DELETE FROM $table WHERE id = ?")->execute([$ids[2]]);
$pdo->commit();
$out['after_tx'] = (int) $pdo->query("SELECT COUNT(*) FROM $table")->fetchColumn();

// An error on a missing table: the exception's errorInfo, SQLSTATE and driver code.
try {
    $pdo->prepare("SELECT * FROM {$table}_missing WHERE id = ?")->execute([1]);
    $out['error'] = null;
} catch (PDOException $e) {
    $out['error'] = ['errorInfo' => $e->errorInfo, 'code' => $e->getCode()];
}
$out['after_error'] = $pdo->query('SELECT 1 + 1')->fetchColumn();

echo json_encode($out, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE), "\n";
