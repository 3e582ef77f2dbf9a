// Package cdr reads Asterisk's Call Detail Records after the fact: the record of every call that
// Asterisk writes whether or not anybody listened on AMI. pbxbridge uses it to recover calls
// that began and ended while the daemon (or its AMI connection) was down.
//
// Two backends implement Source:
//
//   - CSVReader reads cdr_csv's Master.csv (or an accountcode file of the same layout). The
//     file grows forever, so a read never loads it: it seeks by time with a binary search over
//     the file (see CSVConfig.MaxCallAge for the bound that makes this exact), streams the
//     records from there and stops once no later record can fall in the window. Every record is
//     capped at MaxRecordSize bytes, so memory per record is bounded whatever the file holds.
//   - MySQLReader reads the cdr table of a MySQL or MariaDB database: FreePBX's
//     asteriskcdrdb.cdr, or any table written by cdr_adaptive_odbc / cdr_mysql. It discovers
//     the table's columns on every read, selects the ones it knows and runs one parameterised
//     query per window with a server-side statement timeout and a row limit.
//
// Both return Rows whose Start lies in the half-open window [from, to), with times in the
// configured time zone of the PBX. Group ties the rows of one call together: by linkedid when
// the layout has it, otherwise by the chains of channel names that the rows of one call share.
// ReadCalls reads a window with a margin around it and returns the whole calls that began in
// it, which is what recovering a gap needs.
//
// What the rows of each layout can and cannot tell about a call is described on Row and in
// Group's documentation; converting them into call records is the caller's business.
//
// Concurrency: readers hold no state between reads except their configuration (MySQLReader
// holds a connection pool) and are safe for concurrent use. Group is a pure function.
//
// Errors are prefixed "cdr: ". A malformed record is a *RecordError naming the file, line (when
// known), byte offset and field; ErrTooManyRows reports a window holding more rows than the
// configured limit (narrow the window and read again).
package cdr
