// Package store keeps Portcullis's durable per-digest records (scan findings, verification results)
// in one embedded bbolt database under the manager's cache dir (go.etcd.io/bbolt: a single file,
// B+tree, ACID transactions, one writer at a time). Records survive a restart and outnumber what
// memory could hold, so neither a restart nor a large inventory forces a rescan or a re-verification.
//
// Keys start with the image digest and a `|` (`sha256:<hex>|<rest>`), so Prune can drop every
// record of a digest that left every inventory. Values are JSON.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets of the records.
const (
	// Scans holds a scan's findings per digest and vulnerability DB build.
	Scans = "scans"
	// Verifications holds a verification result per digest, policy and key material.
	Verifications = "verifications"
)

// Store is an open record database. Safe for concurrent use.
type Store struct{ db *bolt.DB }

// Open opens (or creates) the database file at path, with its buckets. It waits at most 10 s for
// another process holding the file.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening the record store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{Scans, Verifications} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("preparing the record store %s: %w", path, err), db.Close())
	}
	return &Store{db: db}, nil
}

// Key builds a record key: the digest, `|`, then the parts joined by `|`.
func Key(digest string, parts ...string) string {
	return digest + "|" + strings.Join(parts, "|")
}

// Get decodes the record at key of bucket into v and reports whether there was one. A record that
// no longer decodes (an older format) counts as absent.
func (s *Store) Get(bucket, key string, v any) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket([]byte(bucket)).Get([]byte(key))
		if data == nil {
			return nil
		}
		found = json.Unmarshal(data, v) == nil // data is valid only inside the transaction
		return nil
	})
	return found, err
}

// Put writes v as the record at key of bucket. Concurrent Puts share one transaction (bbolt's
// Batch), so many writers cost few disk syncs.
func (s *Store) Put(bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), data) })
}

// Prune deletes, in every bucket, the records whose digest keep rejects, and returns how many.
func (s *Store) Prune(keep func(digest string) bool) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{Scans, Verifications} {
			c := tx.Bucket([]byte(b)).Cursor()
			for k, _ := c.First(); k != nil; {
				digest, _, _ := strings.Cut(string(k), "|")
				if keep(digest) {
					k, _ = c.Next()
					continue
				}
				deleted := append([]byte(nil), k...)
				if err := c.Delete(); err != nil {
					return err
				}
				n++
				k, _ = c.Seek(deleted) // after Delete, Next would skip a key: seek past the deleted one
			}
		}
		return nil
	})
	return n, err
}

// Len is the number of records in bucket.
func (s *Store) Len(bucket string) int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte(bucket)).Stats().KeyN
		return nil
	})
	return n
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
