//! The office pages' words, in Vietnamese (the default) and English.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Vi,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        }
    }

    /// Pick the text of this language from a pair.
    pub fn pick<'a>(self, vi: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }

    /// The words for `key`, when there are any (a code from a newer peer has none).
    pub fn try_t(self, key: &str) -> Option<&'static str> {
        WORDS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, vi, en)| self.pick(vi, en))
    }

    pub fn t(self, key: &str) -> &'static str {
        match WORDS.iter().find(|(k, _, _)| *k == key) {
            Some((_, vi, en)) => self.pick(vi, en),
            None => {
                debug_assert!(false, "no words for {key:?}");
                "?"
            }
        }
    }
}

/// (key, Vietnamese, English)
const WORDS: &[(&str, &str, &str)] = &[
    ("app", "Mầm — Bảo vệ, chăm sóc trẻ em", "Mầm — Child protection and care"),
    ("skip", "Bỏ qua, đến nội dung chính", "Skip to the main content"),
    ("menu", "Trình đơn", "Menu"),
    ("dashboard", "Chỉ tiêu", "Targets"),
    ("records", "Phiếu", "Records"),
    ("conflicts", "Xung đột", "Conflicts"),
    ("phones", "Điện thoại", "Phones"),
    ("forms", "Biểu mẫu", "Forms"),
    ("rejected", "Bị từ chối", "Rejected edits"),
    ("logout", "Đăng xuất", "Sign out"),
    ("login", "Đăng nhập", "Sign in"),
    ("login_title", "Đăng nhập văn phòng", "Office sign-in"),
    ("name", "Tên đăng nhập", "User name"),
    ("password", "Mật khẩu", "Password"),
    ("login_wrong", "Sai tên đăng nhập hoặc mật khẩu.", "Wrong user name or password."),
    ("login_locked", "Tài khoản tạm khoá vì đăng nhập sai nhiều lần. Thử lại sau", "The account is locked after repeated failures. Try again after"),
    ("login_expired", "Phiên làm việc đã hết hạn, vui lòng đăng nhập lại.", "The session has ended; please sign in again."),
    ("switch_lang", "English", "Tiếng Việt"),
    ("period", "Kỳ báo cáo", "Period"),
    ("geography", "Địa giới", "Geography"),
    ("level", "Theo", "By"),
    ("district", "Huyện", "District"),
    ("commune", "Xã/phường", "Commune"),
    ("province", "Tỉnh", "Province"),
    ("show", "Xem", "Show"),
    ("download_csv", "Tải CSV", "Download CSV"),
    ("download_xlsx", "Tải báo cáo Excel", "Download the Excel report"),
    ("area", "Địa bàn", "Area"),
    ("value", "Giá trị", "Value"),
    ("target", "Chỉ tiêu", "Target"),
    ("status", "Tình trạng", "Status"),
    ("met", "Đạt", "Met"),
    ("not_met", "Chưa đạt", "Not met"),
    ("provisional", "Tạm tính", "Provisional"),
    ("no_target", "Không có chỉ tiêu số", "No numeric target"),
    ("in_conflict", "Phiếu đang xung đột", "Records in conflict"),
    ("records_behind", "Số phiếu", "Records"),
    ("numerator", "Tử số", "Numerator"),
    ("denominator", "Mẫu số", "Denominator"),
    ("no_data", "Chưa có số liệu cho kỳ này.", "No figures for this period yet."),
    ("no_data_short", "Chưa có số liệu", "No figures"),
    ("z_severe", "suy dinh dưỡng nặng", "severe undernutrition"),
    ("z_moderate", "suy dinh dưỡng vừa", "moderate undernutrition"),
    ("z_normal", "bình thường", "normal"),
    ("z_overweight", "thừa cân", "overweight"),
    ("z_flagged", "⚠ không hợp lý: WHO loại khỏi tỷ lệ", "⚠ implausible: left out of prevalence by WHO"),
    ("not_a_plan_target", "Không phải chỉ tiêu của Kế hoạch 2020", "Not a target of the 2020 plan"),
    ("overview", "Tổng hợp toàn địa bàn", "Your whole area"),
    ("chart", "Biểu đồ theo địa bàn", "Chart by area"),
    ("contents", "Các chỉ tiêu", "The targets"),
    ("behind_title", "Các phiếu sau con số", "The records behind the number"),
    ("part", "Phần", "Part"),
    ("form", "Biểu mẫu", "Form"),
    ("village", "Thôn", "Village"),
    ("date_from", "Từ ngày", "From"),
    ("date_to", "Đến ngày", "To"),
    ("date", "Ngày", "Date"),
    ("all", "Tất cả", "All"),
    ("status_conflict", "Đang xung đột", "In conflict"),
    ("status_rejected", "Có sửa bị từ chối", "With a rejected edit"),
    ("status_deleted", "Đã xoá", "Deleted"),
    ("status_ok", "Bình thường", "Settled"),
    ("filter", "Lọc", "Filter"),
    ("found", "Số phiếu tìm thấy", "Records found"),
    ("refusals_found", "Số lượt sửa bị từ chối", "Refused edits"),
    ("all_phones", "mọi thiết bị", "all devices"),
    ("previous", "Trang trước", "Previous page"),
    ("next", "Trang sau", "Next page"),
    ("page", "Trang", "Page"),
    ("record", "Phiếu", "Record"),
    ("field", "Trường", "Field"),
    ("fields", "Nội dung", "Fields"),
    ("derived", "Trường tính tự động", "Computed fields"),
    ("history", "Lịch sử sửa", "History"),
    ("when", "Thời điểm", "When"),
    ("who", "Người sửa", "Who"),
    ("phone", "Thiết bị", "Device"),
    ("seq", "Số thứ tự", "Seq"),
    ("changed", "Trường đã sửa", "Fields changed"),
    ("refused", "bị từ chối", "refused"),
    ("siblings", "Các giá trị song song", "Values side by side"),
    ("settle", "Chọn giá trị đúng", "Settle"),
    ("settle_help", "Chọn một giá trị hoặc nhập giá trị khác. Lựa chọn được gửi như một lần sửa bình thường và đồng bộ về điện thoại.", "Choose one value or type another. The choice is an ordinary edit and syncs to the phones."),
    ("other_value", "Giá trị khác", "Another value"),
    ("save_choice", "Lưu lựa chọn", "Save the choice"),
    ("settled", "Đã lưu lựa chọn. Điện thoại sẽ nhận ở lần đồng bộ tới.", "The choice is saved. Phones receive it at their next sync."),
    ("follows", "tiếp nối máy", "follows phone"),
    ("settle_stale", "Chưa lưu gì: trong lúc bạn xem, hồ sơ đã nhận giá trị mới ở các trường sau. Trang dưới đây cho thấy các giá trị hiện có; hãy xem lại và chọn lần nữa:", "Nothing was saved: while you were looking, the record received new values in these fields. The page below shows the values it holds now; look again and choose:"),
    ("keep_deleted", "Giữ phiếu đã xoá", "Keep the record deleted"),
    ("restore", "Khôi phục phiếu", "Restore the record"),
    ("qr_unreachable", "Điện thoại không mở được địa chỉ này (là chính máy chủ). Hãy mở trang bằng địa chỉ mạng của máy chủ, hoặc đặt server.public_url (xem README, \"Serving phones\").", "Phones cannot open this address (it is the server itself). Open this page by the server's network address, or set server.public_url (README, \"Serving phones\")."),
    ("qr_insecure", "Địa chỉ không dùng HTTPS: điện thoại sẽ không làm việc ngoại tuyến được và không lấy được vị trí. Xem README, \"Serving phones\".", "This address is not HTTPS: phones will not work offline or take a location. See README, \"Serving phones\"."),
    ("code_invalid_edit", "Phiếu gửi lên không đúng dạng", "Malformed edit"),
    ("code_unknown_form", "Biểu mẫu không có trên máy chủ", "Unknown form"),
    ("code_unknown_version", "Phiên bản biểu mẫu không có", "Unknown form version"),
    ("code_unknown_field", "Trường không có trong biểu mẫu", "Unknown field"),
    ("code_invalid_value", "Giá trị không hợp lệ", "Invalid value"),
    ("code_out_of_scope", "Ngoài địa bàn của máy", "Outside the phone's area"),
    ("code_form_mismatch", "Hồ sơ thuộc biểu mẫu khác", "Record of another form"),
    ("code_invalid_supersedes", "Sửa dựa trên bản máy chủ chưa có", "Supersedes an unknown edit"),
    ("code_seq_reused", "Số thứ tự đã dùng cho thay đổi khác", "Sequence number reused"),
    ("code_invalid_seq", "Số thứ tự không hợp lệ (0)", "Invalid sequence number (0)"),
    ("code_lost", "Mất khi khôi phục dữ liệu", "Lost in a restore"),
    ("rule_type", "sai kiểu dữ liệu", "wrong kind of value"),
    ("rule_required", "bắt buộc", "required"),
    ("rule_required_if", "bắt buộc theo điều kiện", "required by a condition"),
    ("rule_min", "nhỏ hơn mức tối thiểu", "below the minimum"),
    ("rule_max", "lớn hơn mức tối đa", "above the maximum"),
    ("rule_pattern", "không đúng dạng", "not in the expected form"),
    ("rule_choice", "không có trong lựa chọn", "not one of the choices"),
    ("rule_not_future", "ngày trong tương lai", "a date in the future"),
    ("rule_not_before", "trước ngày liên quan", "before a related date"),
    ("rule_commune_on_date", "xã không tồn tại vào ngày đó", "commune not in force on that day"),
    ("rule_commune_matches", "xã không khớp", "commune does not match"),
    ("rule_max_length", "quá dài", "too long"),
    ("rule_unique", "chọn trùng", "chosen twice"),
    ("rule_max_items", "quá nhiều mục", "too many items"),
    ("rule_unknown_field", "trường không có", "no such field"),
    ("name_search", "Tên", "Name"),
    ("revoke_title", "Thu hồi điện thoại", "Revoke a phone"),
    ("revoke_explain", "Sau khi thu hồi, máy này không đồng bộ được nữa và các phiếu trên máy bị xoá; những thay đổi chưa gửi được giữ lại trên máy, để gửi lên khi máy được kích hoạt lại bằng mã mới, hoặc tải về. Không hoàn tác được.", "Once revoked, this phone can no longer sync and the records on it are removed; changes it had not sent are kept aside on the phone, to be sent when it is enrolled again with a new code, or downloaded. This cannot be undone."),
    ("revoke_confirm", "Thu hồi máy này", "Revoke this phone"),
    ("cancel", "Huỷ, quay lại", "Cancel, go back"),
    ("phone_refusals", "Lượt sửa bị từ chối của máy này", "This phone's refused edits"),
    ("export_csv", "Tải hồ sơ (CSV)", "Download records (CSV)"),
    ("export_xlsx", "Tải hồ sơ (Excel)", "Download records (Excel)"),
    ("pending_outcome", "chưa đến hạn", "not due yet"),
    ("login_throttled", "Quá nhiều lượt đăng nhập sai từ mạng này. Thử lại sau", "Too many failed sign-ins from this network. Try again in"),
    ("login_reason_throttled", "quá nhiều lượt sai từ một địa chỉ", "too many failures from one address"),
    ("login_busy", "Máy chủ đang kiểm tra nhiều lượt đăng nhập. Xin thử lại sau vài giây.", "The server is checking many sign-ins at once. Try again in a few seconds."),
    ("came_back", "sau khi khôi phục đã nhận lượt sửa", "since the restore, received seqs"),
    ("nothing_back_yet", "sau khi khôi phục chưa gửi lại gì", "nothing sent since the restore"),
    ("lost_for_good", "lượt trong đó mất hẳn (xem Bị từ chối)", "of them lost for good (see Refused)"),
    ("broken_rule", "Hai bản sửa cùng lúc, mỗi bản đều đúng, gộp lại thì trái quy tắc. Sửa một trong các trường dưới đây:", "Two edits made at the same time, each valid on its own, break a rule together. Correct one of the fields below:"),
    ("delete_conflict", "Phiếu bị xoá trong khi có người sửa.", "The record was deleted while someone edited it."),
    ("no_conflicts", "Không có xung đột nào trong địa bàn.", "No conflicts in your area."),
    ("collaborator", "Cộng tác viên", "Collaborator"),
    ("communes", "Các xã", "Communes"),
    ("last_sync", "Đồng bộ lần cuối", "Last sync"),
    ("last_seq", "Số sửa đã nhận", "Last acknowledged seq"),
    ("pending_rejections", "Sửa bị từ chối", "Rejected edits"),
    ("enrolled", "Đã kích hoạt", "Enrolled"),
    ("waiting", "Chờ kích hoạt", "Awaiting enrolment"),
    ("revoked", "Đã thu hồi", "Revoked"),
    ("revoke", "Thu hồi", "Revoke"),
    ("never", "Chưa", "Never"),
    ("enrol_title", "Kích hoạt điện thoại mới", "Enrol a new phone"),
    ("enrol", "Tạo mã kích hoạt", "Create an enrolment code"),
    ("enrol_odk", "Điện thoại dùng ODK Collect (hoặc KoboCollect)", "The phone has ODK Collect (or KoboCollect)"),
    ("odk_title", "Cấu hình ODK Collect", "ODK Collect settings"),
    ("odk_help", "Trong ODK Collect: Cấu hình dự án → Quét mã QR này. Hoặc nhập địa chỉ máy chủ dưới đây (nó chứa khóa của máy này: chỉ đưa cho máy này). Mã chỉ hiện một lần; mất thì thu hồi máy và tạo lại.", "In ODK Collect: Configure project → scan this QR code. Or type the server URL below (it holds this phone's key: give it to this phone alone). It is shown once; if lost, revoke the phone and enrol it again."),
    ("enrol_code", "Mã kích hoạt dùng một lần", "One-time enrolment code"),
    ("enrol_help", "Nhập mã này trên điện thoại hoặc quét mã QR. Mã dùng được một lần, hết hạn lúc", "Type this code on the phone or scan the QR code. It works once and expires at"),
    ("qr", "Mã QR để kích hoạt", "QR code for enrolment"),
    ("versions", "Các phiên bản", "Versions"),
    ("version", "Phiên bản", "Version"),
    ("current", "hiện hành", "current"),
    ("type", "Kiểu", "Type"),
    ("required", "Bắt buộc", "Required"),
    ("publish", "Ban hành phiên bản mới", "Publish a new version"),
    ("publish_file", "Tệp biểu mẫu (JSON hoặc XLSForm .xlsx)", "Form file (JSON or XLSForm .xlsx)"),
    ("publish_button", "Ban hành", "Publish"),
    ("publish_only_province", "Chỉ Sở LĐ-TBXH tỉnh được ban hành biểu mẫu.", "Only the provincial office publishes forms."),
    ("published", "Đã ban hành", "Published"),
    ("unchanged", "Phiên bản này đã được ban hành, không thay đổi gì.", "That version is published already; nothing changed."),
    ("code", "Mã lỗi", "Code"),
    ("rule", "Quy tắc", "Rule"),
    ("message", "Lý do", "Reason"),
    ("edit", "Nội dung gửi", "The edit as sent"),
    ("no_rejected", "Không có lần sửa nào bị từ chối.", "No refused edits."),
    ("refused_logins", "Đăng nhập bị từ chối", "Refused sign-ins"),
    ("login_reason_password", "sai mật khẩu", "wrong password"),
    ("login_reason_unknown", "không có tài khoản này", "no such account"),
    ("login_reason_busy", "máy chủ bận, chưa kiểm tra", "server busy, not checked"),
    ("refused_uploads", "Ảnh và tệp bị từ chối", "Photos and files refused"),
    ("open_map", "xem trên bản đồ", "open on a map"),
    ("attachment_waiting", "ảnh/tệp đang chờ tải lên từ điện thoại", "waiting for the phone to upload it"),
    ("has_photo", "có ảnh", "with a photo"),
    ("points", "điểm", "points"),
    ("code_payload_too_large", "tệp quá lớn", "over the size limit"),
    ("code_hash_mismatch", "tệp nhận được không khớp mã băm", "the bytes received do not match their hash"),
    ("code_unsupported_media_type", "loại tệp không được nhận", "a file type not taken"),
    ("login_reason_locked", "tài khoản đang bị khoá", "account locked"),
    ("yes", "Có", "Yes"),
    ("no", "Không", "No"),
    ("empty", "(trống)", "(empty)"),
    ("not_found", "Không tìm thấy trong địa bàn của bạn.", "Not found in your area."),
    ("forbidden", "Bạn không có quyền làm việc này.", "You may not do this."),
    ("bad_request", "Yêu cầu không hợp lệ", "The request is not valid"),
    ("back", "Quay lại", "Back"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_once_and_both_languages_filled() {
        let mut keys: Vec<&str> = WORDS.iter().map(|w| w.0).collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, keys.len(), "a key is listed twice");
        for (key, vi, en) in WORDS {
            assert!(!vi.is_empty() && !en.is_empty(), "{key} lacks a language");
        }
        assert_eq!(Lang::En.t("records"), "Records");
        assert_eq!(Lang::Vi.t("records"), "Phiếu");
    }
}
