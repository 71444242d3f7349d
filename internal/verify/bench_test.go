package verify

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// BenchmarkVerify200 verifies 200 signed digests in-process (one compiled Verifier) and, for the
// same digests, with one `cosign verify --key ... --insecure-ignore-tlog` process per digest (the
// obvious alternative: shelling out to the CLI), and reports both times and their ratio.
//
//	make bench   (builds the cosign CLI into the tool cache once; never part of CI)
func BenchmarkVerify200(b *testing.B) {
	cosignBin := os.Getenv("PORTCULLIS_COSIGN_BIN")
	if cosignBin == "" {
		b.Fatal("PORTCULLIS_COSIGN_BIN is not set: run `make bench`")
	}
	reg := newRegistry(b)
	key := newKey(b, "p256", crypto.SHA256)
	pubPath := filepath.Join(b.TempDir(), "cosign.pub")
	if err := os.WriteFile(pubPath, key.pubPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	const n = 200
	digests := make([]name.Digest, n)
	for i := range n {
		digests[i] = reg.pushImage(b, fmt.Sprintf("bench/app-%03d", i))
		sign(b, digests[i], key.signer, "")
	}
	v, err := Compile(keyPolicy("k"), Material{"k": key.pubPEM})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var inProcess, cli time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for _, d := range digests {
			res, err := v.Verify(ctx, d)
			if err != nil || !res.Verified {
				b.Fatalf("%s: %+v %v", d, res, err)
			}
		}
		inProcess += time.Since(start)

		start = time.Now()
		for _, d := range digests {
			cmd := exec.Command(cosignBin, "verify", "--key", pubPath, "--insecure-ignore-tlog=true",
				"--allow-http-registry", "--allow-insecure-registry", "--output", "json", d.String())
			cmd.Env = append(os.Environ(), "COSIGN_EXPERIMENTAL=0", "TUF_ROOT="+b.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("cosign verify %s: %v\n%s", d, err, out)
			}
		}
		cli += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(inProcess.Milliseconds())/float64(b.N), "inprocess-ms/200")
	b.ReportMetric(float64(cli.Milliseconds())/float64(b.N), "cli-ms/200")
	b.ReportMetric(float64(cli)/float64(inProcess), "cli/inprocess")
}

// BenchmarkVerifyBundles200 is BenchmarkVerify200 for cosign v3's default format: 200 digests each
// signed with a sigstore bundle stored as an OCI 1.1 referrer, verified in-process and with one
// `cosign verify --key ... --insecure-ignore-tlog` process (cosign v3) per digest.
//
//	make bench   (builds cosign v3 into the tool cache once; never part of CI)
func BenchmarkVerifyBundles200(b *testing.B) {
	cosignBin := os.Getenv("PORTCULLIS_COSIGN3_BIN")
	if cosignBin == "" {
		b.Fatal("PORTCULLIS_COSIGN3_BIN is not set: run `make bench`")
	}
	reg := newRegistry(b)
	signer := verifytest.NewBundleSigner(b)
	pubPath := filepath.Join(b.TempDir(), "cosign.pub")
	if err := os.WriteFile(pubPath, signer.PublicPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	const n = 200
	digests := make([]name.Digest, n)
	for i := range n {
		digests[i] = reg.pushImage(b, fmt.Sprintf("bench/app-%03d", i))
		signer.SignBundle(b, digests[i])
	}
	v, err := Compile(keyPolicy("k"), Material{"k": signer.PublicPEM})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var inProcess, cli time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for _, d := range digests {
			res, err := v.Verify(ctx, d)
			if err != nil || !res.Verified {
				b.Fatalf("%s: %+v %v", d, res, err)
			}
		}
		inProcess += time.Since(start)

		start = time.Now()
		for _, d := range digests {
			cmd := exec.Command(cosignBin, "verify", "--key", pubPath, "--insecure-ignore-tlog=true",
				"--allow-http-registry", "--allow-insecure-registry", "--output", "json", d.String())
			cmd.Env = append(os.Environ(), "TUF_ROOT="+b.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("cosign verify %s: %v\n%s", d, err, out)
			}
		}
		cli += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(inProcess.Milliseconds())/float64(b.N), "inprocess-ms/200")
	b.ReportMetric(float64(cli.Milliseconds())/float64(b.N), "cli-ms/200")
	b.ReportMetric(float64(cli)/float64(inProcess), "cli/inprocess")
}
