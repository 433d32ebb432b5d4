<?php
// Drives a server-side read-only cursor (COM_STMT_FETCH) with PHP mysqli through $PYPROXY_*.
// Prints one JSON object; any uncaught exception exits non-zero.
declare(strict_types=1);
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

$db = new mysqli(getenv('PYPROXY_HOST'), getenv('PYPROXY_USER'), getenv('PYPROXY_PASSWORD'),
    getenv('PYPROXY_DB'), (int) getenv('PYPROXY_PORT'));
$stmt = $db->prepare('SELECT seq, CONCAT("row", seq) FROM seq_1_to_5000 WHERE seq > ?');
$stmt->attr_set(MYSQLI_STMT_ATTR_CURSOR_TYPE, MYSQLI_CURSOR_TYPE_READ_ONLY);
$out = ['runs' => []];
foreach ([0, 4990] as $from) {
    $stmt->bind_param('i', $from);
    $stmt->execute();
    $stmt->bind_result($seq, $label);
    $count = 0;
    $sum = 0;
    $last = '';
    while ($stmt->fetch()) {
        $count++;
        $sum += $seq;
        $last = $label;
    }
    $stmt->free_result();
    $out['runs'][] = ['count' => $count, 'sum' => $sum, 'last' => $last];
}
$stmt->close();
$out['after'] = $db->query('SELECT 7')->fetch_row()[0];
echo json_encode($out), "\n";
