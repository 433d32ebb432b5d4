<?php
// Read-your-writes loop with PDO (real server-side prepares): INSERT/SELECT, UPDATE/SELECT,
// CREATE TABLE/SELECT. Prints {"stale": n, ...}.
declare(strict_types=1);
[$_, $table, $iterations] = $argv;
$iterations = (int) $iterations;
$dsn = sprintf('mysql:host=%s;port=%s;dbname=%s', getenv('PYPROXY_HOST'),
    getenv('PYPROXY_PORT'), getenv('PYPROXY_DB'));
$pdo = new PDO($dsn, getenv('PYPROXY_USER'), getenv('PYPROXY_PASSWORD'), [
    PDO::ATTR_EMULATE_PREPARES => false, PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
$pdo->exec("CREATE TABLE $table (id INT PRIMARY KEY, v INT NOT NULL)");
$ins = $pdo->prepare("INSERT INTO $table (id, v) VALUES (?, 0)");
$upd = $pdo->prepare("UPDATE $table SET v = ? WHERE id = ?");
$sel = $pdo->prepare("SELECT v FROM $table WHERE id = ?");
$stale = 0;
for ($i = 0; $i < $iterations; $i++) {
    $ins->execute([$i]);
    $sel->execute([$i]);
    $rows = $sel->fetchAll(PDO::FETCH_NUM);
    if (count($rows) !== 1) { $stale++; }
    $upd->execute([$i + 1, $i]);
    $sel->execute([$i]);
    $rows = $sel->fetchAll(PDO::FETCH_NUM);
    if (count($rows) !== 1 || (int) $rows[0][0] !== $i + 1) { $stale++; }
    if ($i % 50 === 0) {
        $pdo->exec("CREATE TABLE {$table}_$i (id INT)");
        try { $pdo->query("SELECT COUNT(*) FROM {$table}_$i")->fetchAll(); }
        catch (PDOException $e) { $stale++; }
        $pdo->exec("DROP TABLE {$table}_$i");
    }
}
echo json_encode(['iterations' => $iterations, 'stale' => $stale]), "\n";
