#!/usr/bin/perl
# Drives DBD::MariaDB (server-side prepares) through the endpoint in $PYPROXY_*.
# Prints one JSON object; any error dies, which exits non-zero.
use strict;
use warnings;
use DBI;
use JSON::PP;

my $table = $ARGV[0] or die "usage: client.pl TABLE\n";
my $dsn = "DBI:MariaDB:database=$ENV{PYPROXY_DB};host=$ENV{PYPROXY_HOST};"
    . "port=$ENV{PYPROXY_PORT};mariadb_server_prepare=1;mariadb_connect_timeout=10";
my $dbh = DBI->connect($dsn, $ENV{PYPROXY_USER}, $ENV{PYPROXY_PASSWORD},
    { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
my %out = (server_prepare => $dbh->{mariadb_server_prepare} ? JSON::PP::true : JSON::PP::false);

$dbh->do("CREATE TABLE $table (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40),"
    . " n INT NULL) CHARSET=utf8mb4");

# One prepared INSERT with placeholders, executed several times; ids from the driver.
my $ins = $dbh->prepare("INSERT INTO $table (name, n) VALUES (?, ?)");
my @ids;
for my $row (['one', 1], ['two', undef], ['three', 3]) {
    $ins->execute(@$row);
    push @ids, $dbh->{mariadb_insertid};
}
$out{sth_insertid} = $ins->{mariadb_insertid};
$out{last_insert_id} = $dbh->last_insert_id(undef, undef, $table, 'id');

my $sel = $dbh->prepare("SELECT id, name, n FROM $table WHERE id >= ? ORDER BY id");
$sel->execute($ids[1]);
$out{rows} = $sel->fetchall_arrayref;
$sel->execute($ids[0]);  # the same statement, re-executed
my @first = $sel->fetchrow_array;
$sel->finish;
$out{first} = \@first;
$out{affected} = $dbh->do("UPDATE $table SET n = ? WHERE n IS NULL OR n = ?", undef, 20, 3);

# A transaction with AutoCommit off, rolled back.
$dbh->{AutoCommit} = 0;
$dbh->do("DELETE FROM $table WHERE id = ?", undef, $ids[0]);
$dbh->do("INSERT INTO $table (name) VALUES (?)", undef, 'rolled back');
$out{count_in_tx} = $dbh->selectrow_array("SELECT COUNT(*) FROM $table");
$dbh->rollback;
$dbh->{AutoCommit} = 1;
$out{count_after_rollback} = $dbh->selectrow_array("SELECT COUNT(*) FROM $table");

# An error: err (errno), state (SQLSTATE), errstr.
{
    local $dbh->{RaiseError} = 0;
    my $bad = $dbh->prepare("SELECT * FROM ${table}_missing WHERE id = ?");
    $bad->execute(1) if $bad;
    $out{error} = { err => $dbh->err + 0, state => $dbh->state, errstr => $dbh->errstr };
}
$out{after_error} = $dbh->selectrow_array('SELECT 1 + 1');
$dbh->disconnect;

$out{ids} = [map { $_ + 0 } @ids];  # numbers, though they were also used as bind values

print JSON::PP->new->canonical->encode(\%out), "\n";
