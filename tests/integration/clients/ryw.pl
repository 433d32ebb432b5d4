#!/usr/bin/perl
# Read-your-writes loop with DBD::MariaDB (server-side prepare): INSERT/SELECT, UPDATE/SELECT,
# CREATE TABLE/SELECT. Prints {"stale": n, ...}.
use strict;
use warnings;
use DBI;

my ($table, $iterations) = @ARGV;
my $dsn = "DBI:MariaDB:database=$ENV{PYPROXY_DB};host=$ENV{PYPROXY_HOST};"
    . "port=$ENV{PYPROXY_PORT};mariadb_server_prepare=1";
my $dbh = DBI->connect($dsn, $ENV{PYPROXY_USER}, $ENV{PYPROXY_PASSWORD},
    { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
$dbh->do("CREATE TABLE $table (id INT PRIMARY KEY, v INT NOT NULL)");
my $ins = $dbh->prepare("INSERT INTO $table (id, v) VALUES (?, 0)");
my $upd = $dbh->prepare("UPDATE $table SET v = ? WHERE id = ?");
my $sel = $dbh->prepare("SELECT v FROM $table WHERE id = ?");
my $stale = 0;
for my $i (0 .. $iterations - 1) {
    $ins->execute($i);
    $sel->execute($i);
    my $rows = $sel->fetchall_arrayref;
    $stale++ unless @$rows == 1;
    $upd->execute($i + 1, $i);
    $sel->execute($i);
    $rows = $sel->fetchall_arrayref;
    $stale++ unless @$rows == 1 && $rows->[0][0] == $i + 1;
    if ($i % 50 == 0) {
        $dbh->do("CREATE TABLE ${table}_$i (id INT)");
        eval { $dbh->selectall_arrayref("SELECT COUNT(*) FROM ${table}_$i"); 1 } or $stale++;
        $dbh->do("DROP TABLE ${table}_$i");
    }
}
$dbh->disconnect;
print qq({"iterations": $iterations, "stale": $stale}\n);
