//! The Lorenz system: its vector field, its Jacobian, and the field expressed in standardised units.
//!
//! The learned flows live in standardised coordinates (each axis of the dataset scaled to zero mean,
//! unit variance), so comparing them with the truth needs the true field pushed through that affine map:
//! if `y = (x - m) / s` then `dy/dt = f(m + s y) / s`. Fields are written as `Fn(&[f64], &mut [f64])`
//! over one point so the integrators and the Lyapunov code can take them as closures.

use crate::science::points::Standardization;

/// Parameters of the Lorenz system (defaults: sigma 10, rho 28, beta 8/3).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LorenzParams {
    /// Prandtl number.
    pub sigma: f64,
    /// Rayleigh number.
    pub rho: f64,
    /// Geometric factor.
    pub beta: f64,
}

impl Default for LorenzParams {
    fn default() -> Self {
        Self {
            sigma: 10.0,
            rho: 28.0,
            beta: 8.0 / 3.0,
        }
    }
}

impl LorenzParams {
    /// The field `f(x)` at one 3-D point, written into `out`.
    pub fn field(&self, x: &[f64], out: &mut [f64]) {
        out[0] = self.sigma * (x[1] - x[0]);
        out[1] = x[0] * (self.rho - x[2]) - x[1];
        out[2] = x[0] * x[1] - self.beta * x[2];
    }

    /// The Jacobian `J[i][j] = d f_i / d x_j` at one point, row-major 3x3 into `out`.
    pub fn jacobian(&self, x: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&[
            -self.sigma,
            self.sigma,
            0.0,
            self.rho - x[2],
            -1.0,
            -x[0],
            x[1],
            x[0],
            -self.beta,
        ]);
    }

    /// The field in standardised units: for `y = (x - mean)/std`, `dy/dt = f(mean + std*y) / std`.
    pub fn field_standardized(&self, s: &Standardization, y: &[f64], out: &mut [f64]) {
        let x: Vec<f64> = (0..3).map(|i| s.mean[i] + s.std[i] * y[i]).collect();
        self.field(&x, out);
        for (o, sd) in out.iter_mut().zip(&s.std) {
            *o /= sd;
        }
    }

    /// The Jacobian in standardised units: `J_y[i][j] = J_x[i][j] * std[j] / std[i]`.
    pub fn jacobian_standardized(&self, s: &Standardization, y: &[f64], out: &mut [f64]) {
        let x: Vec<f64> = (0..3).map(|i| s.mean[i] + s.std[i] * y[i]).collect();
        self.jacobian(&x, out);
        for i in 0..3 {
            for j in 0..3 {
                out[3 * i + j] *= s.std[j] / s.std[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobians_match_finite_differences() {
        let p = LorenzParams::default();
        let s = Standardization {
            mean: vec![-0.2, 0.1, 24.0],
            std: vec![8.0, 9.0, 7.5],
        };
        let y = [0.3, -0.7, 1.1];
        let (mut j, mut fp, mut fm) = ([0.0; 9], [0.0; 3], [0.0; 3]);
        p.jacobian_standardized(&s, &y, &mut j);
        for c in 0..3 {
            let h = 1e-6;
            let (mut yp, mut ym) = (y, y);
            yp[c] += h;
            ym[c] -= h;
            p.field_standardized(&s, &yp, &mut fp);
            p.field_standardized(&s, &ym, &mut fm);
            for r in 0..3 {
                let fd = (fp[r] - fm[r]) / (2.0 * h);
                assert!(
                    (fd - j[3 * r + c]).abs() < 1e-6,
                    "{r},{c}: {fd} vs {}",
                    j[3 * r + c]
                );
            }
        }
    }
}
