# Shared by the HTTP tests (050, 051, 052, 060): the test HTTP server
# (test/http_server.py) on 127.0.0.1, and reading its JSON endpoints.

package BatchflowHttp;

use strict;
use warnings;

use FindBin;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Utils;

use Exporter 'import';
our @EXPORT = qw(start_http_server server_json);

my @server_pids;
END { kill('TERM', @server_pids) if @server_pids; }

# Start the server on a free port (it writes the port to a file); returns
# the port, or an empty string if it did not come up within 10 s.  The
# server is stopped when the test exits.
sub start_http_server
{
	my $port_file = "${PostgreSQL::Test::Utils::tmp_check}/http_server_$$.port";
	unlink $port_file;
	my $pid = fork();
	die "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec('python3', "$FindBin::RealBin/../http_server.py", $port_file)
		  or die "could not start the test HTTP server: $!";
	}
	push @server_pids, $pid;
	for (my $i = 0; $i < 100 && !-s $port_file; $i++) { select(undef, undef, undef, 0.1); }
	return -s $port_file ? PostgreSQL::Test::Utils::slurp_file($port_file) : '';
}

my $http = HTTP::Tiny->new(timeout => 10);

# GET $base$path from the server and decode its JSON answer.
sub server_json
{
	my ($base, $path) = @_;
	my $res = $http->get("$base$path");
	die "GET $path failed: $res->{status}" unless $res->{success};
	return decode_json($res->{content});
}

1;
