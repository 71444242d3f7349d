package controller

import (
	"context"
	"fmt"
	"net/url"
	"time"

	tov1alpha1 "github.com/aquasecurity/trivy-operator/pkg/apis/aquasecurity/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/scan"
)

// maxExportedFindings caps the findings in an exported trivy-operator report, so it stays far below
// etcd's 1.5 MiB request limit; the summary counts everything.
const maxExportedFindings = 1000

// +kubebuilder:rbac:groups=aquasecurity.github.io,resources=vulnerabilityreports;exposedsecretreports,verbs=list;watch;create;patch

// exportReports writes the scan as trivy-operator's VulnerabilityReport and ExposedSecretReport
// (aquasecurity.github.io/v1alpha1, named and owned like the ImageAttestation), so dashboards and
// exporters built for trivy-operator read Portcullis results (--trivy-operator-reports).
func (r *ImageAttestationReconciler) exportReports(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry, res scan.Result) error {
	u, err := url.Parse(reg.Spec.URL)
	if err != nil {
		return err
	}
	tag := ""
	if len(ia.Spec.Tags) > 0 {
		tag = ia.Spec.Tags[0]
	}
	now := metav1.Time{Time: time.Now()}
	scanner := tov1alpha1.Scanner{Name: tov1alpha1.ScannerNameTrivy, Vendor: "Aqua Security", Version: res.Scanner}
	registry := tov1alpha1.Registry{Server: u.Host}
	artifact := tov1alpha1.Artifact{Repository: ia.Spec.Repository, Digest: ia.Spec.Digest, Tag: tag}

	vr := &tov1alpha1.VulnerabilityReport{ObjectMeta: metav1.ObjectMeta{Name: ia.Name, Namespace: ia.Namespace}}
	if _, err := controllerutil.CreateOrPatch(ctx, r.Client, vr, func() error {
		vr.Labels = map[string]string{v1alpha1.RegistryLabel: ia.Labels[v1alpha1.RegistryLabel], "app.kubernetes.io/managed-by": "portcullis"}
		data := tov1alpha1.VulnerabilityReportData{UpdateTimestamp: now, Scanner: scanner, Registry: registry, Artifact: artifact,
			Vulnerabilities: []tov1alpha1.Vulnerability{}}
		c := severityCounts(res.Vulnerabilities, func(v scan.Vulnerability) string { return v.Severity })
		data.Summary = tov1alpha1.VulnerabilitySummary{CriticalCount: int(c[v1alpha1.SeverityCritical]), HighCount: int(c[v1alpha1.SeverityHigh]),
			MediumCount: int(c[v1alpha1.SeverityMedium]), LowCount: int(c[v1alpha1.SeverityLow]), UnknownCount: int(c[v1alpha1.SeverityUnknown])}
		for i, v := range res.Vulnerabilities {
			if i < maxExportedFindings {
				data.Vulnerabilities = append(data.Vulnerabilities, tov1alpha1.Vulnerability{
					VulnerabilityID: v.ID, Resource: v.Package, InstalledVersion: v.InstalledVersion, FixedVersion: v.FixedVersion,
					Severity: tov1alpha1.Severity(severity(v.Severity)), Title: truncate(v.Title, 250), Links: []string{}})
			}
		}
		vr.Report = data
		return controllerutil.SetControllerReference(ia, vr, r.Scheme())
	}); err != nil {
		return fmt.Errorf("writing VulnerabilityReport %s: %w", vr.Name, err)
	}

	sr := &tov1alpha1.ExposedSecretReport{ObjectMeta: metav1.ObjectMeta{Name: ia.Name, Namespace: ia.Namespace}}
	if _, err := controllerutil.CreateOrPatch(ctx, r.Client, sr, func() error {
		sr.Labels = map[string]string{v1alpha1.RegistryLabel: ia.Labels[v1alpha1.RegistryLabel], "app.kubernetes.io/managed-by": "portcullis"}
		data := tov1alpha1.ExposedSecretReportData{UpdateTimestamp: now, Scanner: scanner, Registry: registry, Artifact: artifact,
			Secrets: []tov1alpha1.ExposedSecret{}}
		c := severityCounts(res.Secrets, func(s scan.Secret) string { return s.Severity })
		// ExposedSecretSummary has no UNKNOWN: those count as LOW, as before.
		data.Summary = tov1alpha1.ExposedSecretSummary{CriticalCount: int(c[v1alpha1.SeverityCritical]), HighCount: int(c[v1alpha1.SeverityHigh]),
			MediumCount: int(c[v1alpha1.SeverityMedium]), LowCount: int(c[v1alpha1.SeverityLow] + c[v1alpha1.SeverityUnknown])}
		for i, s := range res.Secrets {
			if i < maxExportedFindings {
				// The matched text is never exported.
				data.Secrets = append(data.Secrets, tov1alpha1.ExposedSecret{Target: s.Path, RuleID: s.RuleID,
					Title: s.RuleID, Category: "secret", Severity: tov1alpha1.Severity(severity(s.Severity)), Match: ""})
			}
		}
		sr.Report = data
		return controllerutil.SetControllerReference(ia, sr, r.Scheme())
	}); err != nil {
		return fmt.Errorf("writing ExposedSecretReport %s: %w", sr.Name, err)
	}
	return nil
}
