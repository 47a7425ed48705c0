pub use root::*;

const _: () = ::planus::check_version_compatibility("planus-1.3.0");

/// The root namespace
///
/// Generated from these locations:
/// * File `fbs/ztoc.fbs`
#[no_implicit_prelude]
#[allow(clippy::needless_lifetimes)]
mod root {
    /// The namespace `ztoc`
    ///
    /// Generated from these locations:
    /// * File `fbs/ztoc.fbs`
    pub mod ztoc {
        /// The enum `CompressionAlgorithm` in the namespace `ztoc`
        ///
        /// Generated from these locations:
        /// * Enum `CompressionAlgorithm` in the file `fbs/ztoc.fbs:8`
        #[derive(
            Copy,
            Clone,
            Debug,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        #[repr(i8)]
        pub enum CompressionAlgorithm {
            /// The variant `Unknown` in the enum `CompressionAlgorithm`
            Unknown = 0,

            /// The variant `Gzip` in the enum `CompressionAlgorithm`
            Gzip = 1,

            /// The variant `Uncompressed` in the enum `CompressionAlgorithm`
            Uncompressed = 2,
        }

        impl CompressionAlgorithm {
            /// Array containing all valid variants of CompressionAlgorithm
            pub const ENUM_VALUES: [Self; 3] = [Self::Unknown, Self::Gzip, Self::Uncompressed];
        }

        impl ::core::convert::TryFrom<i8> for CompressionAlgorithm {
            type Error = ::planus::errors::UnknownEnumTagKind;
            #[inline]
            fn try_from(
                value: i8,
            ) -> ::core::result::Result<Self, ::planus::errors::UnknownEnumTagKind> {
                #[allow(clippy::match_single_binding)]
                match value {
                    0 => ::core::result::Result::Ok(CompressionAlgorithm::Unknown),
                    1 => ::core::result::Result::Ok(CompressionAlgorithm::Gzip),
                    2 => ::core::result::Result::Ok(CompressionAlgorithm::Uncompressed),

                    _ => ::core::result::Result::Err(::planus::errors::UnknownEnumTagKind {
                        tag: value as i128,
                    }),
                }
            }
        }

        impl ::core::convert::From<CompressionAlgorithm> for i8 {
            #[inline]
            fn from(value: CompressionAlgorithm) -> Self {
                value as i8
            }
        }

        /// # Safety
        /// The Planus compiler correctly calculates `ALIGNMENT` and `SIZE`.
        unsafe impl ::planus::Primitive for CompressionAlgorithm {
            const ALIGNMENT: usize = 1;
            const SIZE: usize = 1;
        }

        impl ::planus::WriteAsPrimitive<CompressionAlgorithm> for CompressionAlgorithm {
            #[inline]
            fn write<const N: usize>(&self, cursor: ::planus::Cursor<'_, N>, buffer_position: u32) {
                (*self as i8).write(cursor, buffer_position);
            }
        }

        impl ::planus::WriteAs<CompressionAlgorithm> for CompressionAlgorithm {
            type Prepared = Self;

            #[inline]
            fn prepare(&self, _builder: &mut ::planus::Builder) -> CompressionAlgorithm {
                *self
            }
        }

        impl ::planus::WriteAsDefault<CompressionAlgorithm, CompressionAlgorithm> for CompressionAlgorithm {
            type Prepared = Self;

            #[inline]
            fn prepare(
                &self,
                _builder: &mut ::planus::Builder,
                default: &CompressionAlgorithm,
            ) -> ::core::option::Option<CompressionAlgorithm> {
                if self == default {
                    ::core::option::Option::None
                } else {
                    ::core::option::Option::Some(*self)
                }
            }
        }

        impl ::planus::WriteAsOptional<CompressionAlgorithm> for CompressionAlgorithm {
            type Prepared = Self;

            #[inline]
            fn prepare(
                &self,
                _builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<CompressionAlgorithm> {
                ::core::option::Option::Some(*self)
            }
        }

        impl<'buf> ::planus::TableRead<'buf> for CompressionAlgorithm {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'buf>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                let n: i8 = ::planus::TableRead::from_buffer(buffer, offset)?;
                ::core::result::Result::Ok(::core::convert::TryInto::try_into(n)?)
            }
        }

        impl<'buf> ::planus::VectorReadInner<'buf> for CompressionAlgorithm {
            type Error = ::planus::errors::UnknownEnumTag;
            const STRIDE: usize = 1;
            #[inline]
            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'buf>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::UnknownEnumTag> {
                let value = unsafe { *buffer.buffer.get_unchecked(offset) as i8 };
                let value: ::core::result::Result<Self, _> =
                    ::core::convert::TryInto::try_into(value);
                value.map_err(|error_kind| {
                    error_kind.with_error_location(
                        "CompressionAlgorithm",
                        "VectorRead::from_buffer",
                        buffer.offset_from_start,
                    )
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<CompressionAlgorithm> for CompressionAlgorithm {
            const STRIDE: usize = 1;

            type Value = Self;

            #[inline]
            fn prepare(&self, _builder: &mut ::planus::Builder) -> Self {
                *self
            }

            #[inline]
            unsafe fn write_values(
                values: &[Self],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 1];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - i as u32,
                    );
                }
            }
        }

        /// The table `Xattr` in the namespace `ztoc`
        ///
        /// Generated from these locations:
        /// * Table `Xattr` in the file `fbs/ztoc.fbs:14`
        #[derive(
            Clone,
            Debug,
            PartialEq,
            PartialOrd,
            Eq,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        pub struct Xattr {
            /// The field `key` in the table `Xattr`
            pub key: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `value` in the table `Xattr`
            pub value: ::core::option::Option<::planus::alloc::string::String>,
        }

        #[allow(clippy::derivable_impls)]
        impl ::core::default::Default for Xattr {
            fn default() -> Self {
                Self {
                    key: ::core::default::Default::default(),
                    value: ::core::default::Default::default(),
                }
            }
        }

        impl Xattr {
            /// Creates a [XattrBuilder] for serializing an instance of this table.
            #[inline]
            pub fn builder() -> XattrBuilder<()> {
                XattrBuilder(())
            }

            #[allow(clippy::too_many_arguments)]
            pub fn create(
                builder: &mut ::planus::Builder,
                field_key: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_value: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            ) -> ::planus::Offset<Self> {
                let prepared_key = field_key.prepare(builder);
                let prepared_value = field_value.prepare(builder);

                let mut table_writer: ::planus::table_writer::TableWriter<8> =
                    ::core::default::Default::default();
                if prepared_key.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(0);
                }
                if prepared_value.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(1);
                }

                unsafe {
                    table_writer.finish(builder, |object_writer| {
                        if let ::core::option::Option::Some(prepared_key) = prepared_key {
                            object_writer.write::<_, _, 4>(&prepared_key);
                        }
                        if let ::core::option::Option::Some(prepared_value) = prepared_value {
                            object_writer.write::<_, _, 4>(&prepared_value);
                        }
                    });
                }
                builder.current_offset()
            }
        }

        impl ::planus::WriteAs<::planus::Offset<Xattr>> for Xattr {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Xattr> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl ::planus::WriteAsOptional<::planus::Offset<Xattr>> for Xattr {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<Xattr>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl ::planus::WriteAsOffset<Xattr> for Xattr {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Xattr> {
                Xattr::create(builder, &self.key, &self.value)
            }
        }

        /// Builder for serializing an instance of the [Xattr] type.
        ///
        /// Can be created using the [Xattr::builder] method.
        #[derive(Debug)]
        #[must_use]
        pub struct XattrBuilder<State>(State);

        impl XattrBuilder<()> {
            /// Setter for the [`key` field](Xattr#structfield.key).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn key<T0>(self, value: T0) -> XattrBuilder<(T0,)>
            where
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                XattrBuilder((value,))
            }

            /// Sets the [`key` field](Xattr#structfield.key) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn key_as_null(self) -> XattrBuilder<((),)> {
                self.key(())
            }
        }

        impl<T0> XattrBuilder<(T0,)> {
            /// Setter for the [`value` field](Xattr#structfield.value).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn value<T1>(self, value: T1) -> XattrBuilder<(T0, T1)>
            where
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0,) = self.0;
                XattrBuilder((v0, value))
            }

            /// Sets the [`value` field](Xattr#structfield.value) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn value_as_null(self) -> XattrBuilder<(T0, ())> {
                self.value(())
            }
        }

        impl<T0, T1> XattrBuilder<(T0, T1)> {
            /// Finish writing the builder to get an [Offset](::planus::Offset) to a serialized [Xattr].
            #[inline]
            pub fn finish(self, builder: &mut ::planus::Builder) -> ::planus::Offset<Xattr>
            where
                Self: ::planus::WriteAsOffset<Xattr>,
            {
                ::planus::WriteAsOffset::prepare(&self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            > ::planus::WriteAs<::planus::Offset<Xattr>> for XattrBuilder<(T0, T1)>
        {
            type Prepared = ::planus::Offset<Xattr>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Xattr> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            > ::planus::WriteAsOptional<::planus::Offset<Xattr>> for XattrBuilder<(T0, T1)>
        {
            type Prepared = ::planus::Offset<Xattr>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<Xattr>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            > ::planus::WriteAsOffset<Xattr> for XattrBuilder<(T0, T1)>
        {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Xattr> {
                let (v0, v1) = &self.0;
                Xattr::create(builder, v0, v1)
            }
        }

        /// Reference to a deserialized [Xattr].
        #[derive(Copy, Clone)]
        pub struct XattrRef<'a>(#[allow(dead_code)] ::planus::table_reader::Table<'a>);

        impl<'a> XattrRef<'a> {
            /// Getter for the [`key` field](Xattr#structfield.key).
            #[inline]
            pub fn key(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(0, "Xattr", "key")
            }

            /// Getter for the [`value` field](Xattr#structfield.value).
            #[inline]
            pub fn value(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(1, "Xattr", "value")
            }
        }

        impl<'a> ::core::fmt::Debug for XattrRef<'a> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut f = f.debug_struct("XattrRef");
                if let ::core::option::Option::Some(field_key) = self.key().transpose() {
                    f.field("key", &field_key);
                }
                if let ::core::option::Option::Some(field_value) = self.value().transpose() {
                    f.field("value", &field_value);
                }
                f.finish()
            }
        }

        impl<'a> ::core::convert::TryFrom<XattrRef<'a>> for Xattr {
            type Error = ::planus::Error;

            #[allow(unreachable_code)]
            fn try_from(value: XattrRef<'a>) -> ::planus::Result<Self> {
                ::core::result::Result::Ok(Self {
                    key: value.key()?.map(::core::convert::Into::into),
                    value: value.value()?.map(::core::convert::Into::into),
                })
            }
        }

        impl<'a> ::planus::TableRead<'a> for XattrRef<'a> {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                ::core::result::Result::Ok(Self(::planus::table_reader::Table::from_buffer(
                    buffer, offset,
                )?))
            }
        }

        impl<'a> ::planus::VectorReadInner<'a> for XattrRef<'a> {
            type Error = ::planus::Error;
            const STRIDE: usize = 4;

            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(buffer, offset).map_err(|error_kind| {
                    error_kind.with_error_location("[XattrRef]", "get", buffer.offset_from_start)
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<::planus::Offset<Xattr>> for Xattr {
            type Value = ::planus::Offset<Xattr>;
            const STRIDE: usize = 4;
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> Self::Value {
                ::planus::WriteAs::prepare(self, builder)
            }

            #[inline]
            unsafe fn write_values(
                values: &[::planus::Offset<Xattr>],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 4];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - (Self::STRIDE * i) as u32,
                    );
                }
            }
        }

        impl<'a> ::planus::ReadAsRoot<'a> for XattrRef<'a> {
            fn read_as_root(slice: &'a [u8]) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(
                    ::planus::SliceWithStartOffset {
                        buffer: slice,
                        offset_from_start: 0,
                    },
                    0,
                )
                .map_err(|error_kind| {
                    error_kind.with_error_location("[XattrRef]", "read_as_root", 0)
                })
            }
        }

        /// The table `FileMetadata` in the namespace `ztoc`
        ///
        /// Generated from these locations:
        /// * Table `FileMetadata` in the file `fbs/ztoc.fbs:19`
        #[derive(
            Clone,
            Debug,
            PartialEq,
            PartialOrd,
            Eq,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        pub struct FileMetadata {
            /// The field `name` in the table `FileMetadata`
            pub name: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `type` in the table `FileMetadata`
            pub type_: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `uncompressed_offset` in the table `FileMetadata`
            pub uncompressed_offset: i64,
            /// The field `uncompressed_size` in the table `FileMetadata`
            pub uncompressed_size: i64,
            /// The field `linkname` in the table `FileMetadata`
            pub linkname: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `mode` in the table `FileMetadata`
            pub mode: i64,
            /// The field `uid` in the table `FileMetadata`
            pub uid: u32,
            /// The field `gid` in the table `FileMetadata`
            pub gid: u32,
            /// The field `uname` in the table `FileMetadata`
            pub uname: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `gname` in the table `FileMetadata`
            pub gname: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `mod_time` in the table `FileMetadata`
            pub mod_time: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `devmajor` in the table `FileMetadata`
            pub devmajor: i64,
            /// The field `devminor` in the table `FileMetadata`
            pub devminor: i64,
            /// The field `xattrs` in the table `FileMetadata`
            pub xattrs: ::core::option::Option<::planus::alloc::vec::Vec<self::Xattr>>,
        }

        #[allow(clippy::derivable_impls)]
        impl ::core::default::Default for FileMetadata {
            fn default() -> Self {
                Self {
                    name: ::core::default::Default::default(),
                    type_: ::core::default::Default::default(),
                    uncompressed_offset: 0,
                    uncompressed_size: 0,
                    linkname: ::core::default::Default::default(),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    uname: ::core::default::Default::default(),
                    gname: ::core::default::Default::default(),
                    mod_time: ::core::default::Default::default(),
                    devmajor: 0,
                    devminor: 0,
                    xattrs: ::core::default::Default::default(),
                }
            }
        }

        impl FileMetadata {
            /// Creates a [FileMetadataBuilder] for serializing an instance of this table.
            #[inline]
            pub fn builder() -> FileMetadataBuilder<()> {
                FileMetadataBuilder(())
            }

            #[allow(clippy::too_many_arguments)]
            pub fn create(
                builder: &mut ::planus::Builder,
                field_name: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_type_: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_uncompressed_offset: impl ::planus::WriteAsDefault<i64, i64>,
                field_uncompressed_size: impl ::planus::WriteAsDefault<i64, i64>,
                field_linkname: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_mode: impl ::planus::WriteAsDefault<i64, i64>,
                field_uid: impl ::planus::WriteAsDefault<u32, u32>,
                field_gid: impl ::planus::WriteAsDefault<u32, u32>,
                field_uname: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_gname: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_mod_time: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_devmajor: impl ::planus::WriteAsDefault<i64, i64>,
                field_devminor: impl ::planus::WriteAsDefault<i64, i64>,
                field_xattrs: impl ::planus::WriteAsOptional<
                    ::planus::Offset<[::planus::Offset<self::Xattr>]>,
                >,
            ) -> ::planus::Offset<Self> {
                let prepared_name = field_name.prepare(builder);
                let prepared_type_ = field_type_.prepare(builder);
                let prepared_uncompressed_offset = field_uncompressed_offset.prepare(builder, &0);
                let prepared_uncompressed_size = field_uncompressed_size.prepare(builder, &0);
                let prepared_linkname = field_linkname.prepare(builder);
                let prepared_mode = field_mode.prepare(builder, &0);
                let prepared_uid = field_uid.prepare(builder, &0);
                let prepared_gid = field_gid.prepare(builder, &0);
                let prepared_uname = field_uname.prepare(builder);
                let prepared_gname = field_gname.prepare(builder);
                let prepared_mod_time = field_mod_time.prepare(builder);
                let prepared_devmajor = field_devmajor.prepare(builder, &0);
                let prepared_devminor = field_devminor.prepare(builder, &0);
                let prepared_xattrs = field_xattrs.prepare(builder);

                let mut table_writer: ::planus::table_writer::TableWriter<32> =
                    ::core::default::Default::default();
                if prepared_uncompressed_offset.is_some() {
                    table_writer.write_entry::<i64>(2);
                }
                if prepared_uncompressed_size.is_some() {
                    table_writer.write_entry::<i64>(3);
                }
                if prepared_mode.is_some() {
                    table_writer.write_entry::<i64>(5);
                }
                if prepared_devmajor.is_some() {
                    table_writer.write_entry::<i64>(11);
                }
                if prepared_devminor.is_some() {
                    table_writer.write_entry::<i64>(12);
                }
                if prepared_name.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(0);
                }
                if prepared_type_.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(1);
                }
                if prepared_linkname.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(4);
                }
                if prepared_uid.is_some() {
                    table_writer.write_entry::<u32>(6);
                }
                if prepared_gid.is_some() {
                    table_writer.write_entry::<u32>(7);
                }
                if prepared_uname.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(8);
                }
                if prepared_gname.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(9);
                }
                if prepared_mod_time.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(10);
                }
                if prepared_xattrs.is_some() {
                    table_writer
                        .write_entry::<::planus::Offset<[::planus::Offset<self::Xattr>]>>(13);
                }

                unsafe {
                    table_writer.finish(builder, |object_writer| {
                        if let ::core::option::Option::Some(prepared_uncompressed_offset) =
                            prepared_uncompressed_offset
                        {
                            object_writer.write::<_, _, 8>(&prepared_uncompressed_offset);
                        }
                        if let ::core::option::Option::Some(prepared_uncompressed_size) =
                            prepared_uncompressed_size
                        {
                            object_writer.write::<_, _, 8>(&prepared_uncompressed_size);
                        }
                        if let ::core::option::Option::Some(prepared_mode) = prepared_mode {
                            object_writer.write::<_, _, 8>(&prepared_mode);
                        }
                        if let ::core::option::Option::Some(prepared_devmajor) = prepared_devmajor {
                            object_writer.write::<_, _, 8>(&prepared_devmajor);
                        }
                        if let ::core::option::Option::Some(prepared_devminor) = prepared_devminor {
                            object_writer.write::<_, _, 8>(&prepared_devminor);
                        }
                        if let ::core::option::Option::Some(prepared_name) = prepared_name {
                            object_writer.write::<_, _, 4>(&prepared_name);
                        }
                        if let ::core::option::Option::Some(prepared_type_) = prepared_type_ {
                            object_writer.write::<_, _, 4>(&prepared_type_);
                        }
                        if let ::core::option::Option::Some(prepared_linkname) = prepared_linkname {
                            object_writer.write::<_, _, 4>(&prepared_linkname);
                        }
                        if let ::core::option::Option::Some(prepared_uid) = prepared_uid {
                            object_writer.write::<_, _, 4>(&prepared_uid);
                        }
                        if let ::core::option::Option::Some(prepared_gid) = prepared_gid {
                            object_writer.write::<_, _, 4>(&prepared_gid);
                        }
                        if let ::core::option::Option::Some(prepared_uname) = prepared_uname {
                            object_writer.write::<_, _, 4>(&prepared_uname);
                        }
                        if let ::core::option::Option::Some(prepared_gname) = prepared_gname {
                            object_writer.write::<_, _, 4>(&prepared_gname);
                        }
                        if let ::core::option::Option::Some(prepared_mod_time) = prepared_mod_time {
                            object_writer.write::<_, _, 4>(&prepared_mod_time);
                        }
                        if let ::core::option::Option::Some(prepared_xattrs) = prepared_xattrs {
                            object_writer.write::<_, _, 4>(&prepared_xattrs);
                        }
                    });
                }
                builder.current_offset()
            }
        }

        impl ::planus::WriteAs<::planus::Offset<FileMetadata>> for FileMetadata {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<FileMetadata> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl ::planus::WriteAsOptional<::planus::Offset<FileMetadata>> for FileMetadata {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<FileMetadata>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl ::planus::WriteAsOffset<FileMetadata> for FileMetadata {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<FileMetadata> {
                FileMetadata::create(
                    builder,
                    &self.name,
                    &self.type_,
                    self.uncompressed_offset,
                    self.uncompressed_size,
                    &self.linkname,
                    self.mode,
                    self.uid,
                    self.gid,
                    &self.uname,
                    &self.gname,
                    &self.mod_time,
                    self.devmajor,
                    self.devminor,
                    &self.xattrs,
                )
            }
        }

        /// Builder for serializing an instance of the [FileMetadata] type.
        ///
        /// Can be created using the [FileMetadata::builder] method.
        #[derive(Debug)]
        #[must_use]
        pub struct FileMetadataBuilder<State>(State);

        impl FileMetadataBuilder<()> {
            /// Setter for the [`name` field](FileMetadata#structfield.name).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn name<T0>(self, value: T0) -> FileMetadataBuilder<(T0,)>
            where
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                FileMetadataBuilder((value,))
            }

            /// Sets the [`name` field](FileMetadata#structfield.name) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn name_as_null(self) -> FileMetadataBuilder<((),)> {
                self.name(())
            }
        }

        impl<T0> FileMetadataBuilder<(T0,)> {
            /// Setter for the [`type` field](FileMetadata#structfield.type_).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn type_<T1>(self, value: T1) -> FileMetadataBuilder<(T0, T1)>
            where
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0,) = self.0;
                FileMetadataBuilder((v0, value))
            }

            /// Sets the [`type` field](FileMetadata#structfield.type_) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn type_as_null(self) -> FileMetadataBuilder<(T0, ())> {
                self.type_(())
            }
        }

        impl<T0, T1> FileMetadataBuilder<(T0, T1)> {
            /// Setter for the [`uncompressed_offset` field](FileMetadata#structfield.uncompressed_offset).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uncompressed_offset<T2>(self, value: T2) -> FileMetadataBuilder<(T0, T1, T2)>
            where
                T2: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1) = self.0;
                FileMetadataBuilder((v0, v1, value))
            }

            /// Sets the [`uncompressed_offset` field](FileMetadata#structfield.uncompressed_offset) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uncompressed_offset_as_default(
                self,
            ) -> FileMetadataBuilder<(T0, T1, ::planus::DefaultValue)> {
                self.uncompressed_offset(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2> FileMetadataBuilder<(T0, T1, T2)> {
            /// Setter for the [`uncompressed_size` field](FileMetadata#structfield.uncompressed_size).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uncompressed_size<T3>(self, value: T3) -> FileMetadataBuilder<(T0, T1, T2, T3)>
            where
                T3: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1, v2) = self.0;
                FileMetadataBuilder((v0, v1, v2, value))
            }

            /// Sets the [`uncompressed_size` field](FileMetadata#structfield.uncompressed_size) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uncompressed_size_as_default(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, ::planus::DefaultValue)> {
                self.uncompressed_size(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3> FileMetadataBuilder<(T0, T1, T2, T3)> {
            /// Setter for the [`linkname` field](FileMetadata#structfield.linkname).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn linkname<T4>(self, value: T4) -> FileMetadataBuilder<(T0, T1, T2, T3, T4)>
            where
                T4: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0, v1, v2, v3) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, value))
            }

            /// Sets the [`linkname` field](FileMetadata#structfield.linkname) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn linkname_as_null(self) -> FileMetadataBuilder<(T0, T1, T2, T3, ())> {
                self.linkname(())
            }
        }

        impl<T0, T1, T2, T3, T4> FileMetadataBuilder<(T0, T1, T2, T3, T4)> {
            /// Setter for the [`mode` field](FileMetadata#structfield.mode).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn mode<T5>(self, value: T5) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5)>
            where
                T5: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1, v2, v3, v4) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, value))
            }

            /// Sets the [`mode` field](FileMetadata#structfield.mode) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn mode_as_default(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, ::planus::DefaultValue)> {
                self.mode(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3, T4, T5> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5)> {
            /// Setter for the [`uid` field](FileMetadata#structfield.uid).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uid<T6>(self, value: T6) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6)>
            where
                T6: ::planus::WriteAsDefault<u32, u32>,
            {
                let (v0, v1, v2, v3, v4, v5) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, value))
            }

            /// Sets the [`uid` field](FileMetadata#structfield.uid) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uid_as_default(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, ::planus::DefaultValue)> {
                self.uid(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6)> {
            /// Setter for the [`gid` field](FileMetadata#structfield.gid).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn gid<T7>(self, value: T7) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7)>
            where
                T7: ::planus::WriteAsDefault<u32, u32>,
            {
                let (v0, v1, v2, v3, v4, v5, v6) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, value))
            }

            /// Sets the [`gid` field](FileMetadata#structfield.gid) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn gid_as_default(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, ::planus::DefaultValue)>
            {
                self.gid(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7)> {
            /// Setter for the [`uname` field](FileMetadata#structfield.uname).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uname<T8>(
                self,
                value: T8,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8)>
            where
                T8: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0, v1, v2, v3, v4, v5, v6, v7) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, v7, value))
            }

            /// Sets the [`uname` field](FileMetadata#structfield.uname) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uname_as_null(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, ())> {
                self.uname(())
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7, T8> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8)> {
            /// Setter for the [`gname` field](FileMetadata#structfield.gname).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn gname<T9>(
                self,
                value: T9,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9)>
            where
                T9: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0, v1, v2, v3, v4, v5, v6, v7, v8) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, v7, v8, value))
            }

            /// Sets the [`gname` field](FileMetadata#structfield.gname) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn gname_as_null(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, ())> {
                self.gname(())
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7, T8, T9>
            FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9)>
        {
            /// Setter for the [`mod_time` field](FileMetadata#structfield.mod_time).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn mod_time<T10>(
                self,
                value: T10,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10)>
            where
                T10: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, value))
            }

            /// Sets the [`mod_time` field](FileMetadata#structfield.mod_time) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn mod_time_as_null(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, ())> {
                self.mod_time(())
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>
            FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10)>
        {
            /// Setter for the [`devmajor` field](FileMetadata#structfield.devmajor).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn devmajor<T11>(
                self,
                value: T11,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11)>
            where
                T11: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, value))
            }

            /// Sets the [`devmajor` field](FileMetadata#structfield.devmajor) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn devmajor_as_default(
                self,
            ) -> FileMetadataBuilder<(
                T0,
                T1,
                T2,
                T3,
                T4,
                T5,
                T6,
                T7,
                T8,
                T9,
                T10,
                ::planus::DefaultValue,
            )> {
                self.devmajor(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11>
            FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11)>
        {
            /// Setter for the [`devminor` field](FileMetadata#structfield.devminor).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn devminor<T12>(
                self,
                value: T12,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12)>
            where
                T12: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, value))
            }

            /// Sets the [`devminor` field](FileMetadata#structfield.devminor) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn devminor_as_default(
                self,
            ) -> FileMetadataBuilder<(
                T0,
                T1,
                T2,
                T3,
                T4,
                T5,
                T6,
                T7,
                T8,
                T9,
                T10,
                T11,
                ::planus::DefaultValue,
            )> {
                self.devminor(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>
            FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12)>
        {
            /// Setter for the [`xattrs` field](FileMetadata#structfield.xattrs).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn xattrs<T13>(
                self,
                value: T13,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13)>
            where
                T13: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::Xattr>]>>,
            {
                let (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12) = self.0;
                FileMetadataBuilder((v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, value))
            }

            /// Sets the [`xattrs` field](FileMetadata#structfield.xattrs) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn xattrs_as_null(
                self,
            ) -> FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, ())>
            {
                self.xattrs(())
            }
        }

        impl<T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13>
            FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13)>
        {
            /// Finish writing the builder to get an [Offset](::planus::Offset) to a serialized [FileMetadata].
            #[inline]
            pub fn finish(self, builder: &mut ::planus::Builder) -> ::planus::Offset<FileMetadata>
            where
                Self: ::planus::WriteAsOffset<FileMetadata>,
            {
                ::planus::WriteAsOffset::prepare(&self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T2: ::planus::WriteAsDefault<i64, i64>,
                T3: ::planus::WriteAsDefault<i64, i64>,
                T4: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T5: ::planus::WriteAsDefault<i64, i64>,
                T6: ::planus::WriteAsDefault<u32, u32>,
                T7: ::planus::WriteAsDefault<u32, u32>,
                T8: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T9: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T10: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T11: ::planus::WriteAsDefault<i64, i64>,
                T12: ::planus::WriteAsDefault<i64, i64>,
                T13: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::Xattr>]>>,
            > ::planus::WriteAs<::planus::Offset<FileMetadata>>
            for FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13)>
        {
            type Prepared = ::planus::Offset<FileMetadata>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<FileMetadata> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T2: ::planus::WriteAsDefault<i64, i64>,
                T3: ::planus::WriteAsDefault<i64, i64>,
                T4: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T5: ::planus::WriteAsDefault<i64, i64>,
                T6: ::planus::WriteAsDefault<u32, u32>,
                T7: ::planus::WriteAsDefault<u32, u32>,
                T8: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T9: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T10: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T11: ::planus::WriteAsDefault<i64, i64>,
                T12: ::planus::WriteAsDefault<i64, i64>,
                T13: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::Xattr>]>>,
            > ::planus::WriteAsOptional<::planus::Offset<FileMetadata>>
            for FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13)>
        {
            type Prepared = ::planus::Offset<FileMetadata>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<FileMetadata>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T2: ::planus::WriteAsDefault<i64, i64>,
                T3: ::planus::WriteAsDefault<i64, i64>,
                T4: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T5: ::planus::WriteAsDefault<i64, i64>,
                T6: ::planus::WriteAsDefault<u32, u32>,
                T7: ::planus::WriteAsDefault<u32, u32>,
                T8: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T9: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T10: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T11: ::planus::WriteAsDefault<i64, i64>,
                T12: ::planus::WriteAsDefault<i64, i64>,
                T13: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::Xattr>]>>,
            > ::planus::WriteAsOffset<FileMetadata>
            for FileMetadataBuilder<(T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13)>
        {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<FileMetadata> {
                let (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13) = &self.0;
                FileMetadata::create(
                    builder, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13,
                )
            }
        }

        /// Reference to a deserialized [FileMetadata].
        #[derive(Copy, Clone)]
        pub struct FileMetadataRef<'a>(#[allow(dead_code)] ::planus::table_reader::Table<'a>);

        impl<'a> FileMetadataRef<'a> {
            /// Getter for the [`name` field](FileMetadata#structfield.name).
            #[inline]
            pub fn name(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(0, "FileMetadata", "name")
            }

            /// Getter for the [`type` field](FileMetadata#structfield.type_).
            #[inline]
            pub fn type_(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(1, "FileMetadata", "type_")
            }

            /// Getter for the [`uncompressed_offset` field](FileMetadata#structfield.uncompressed_offset).
            #[inline]
            pub fn uncompressed_offset(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(
                    self.0
                        .access(2, "FileMetadata", "uncompressed_offset")?
                        .unwrap_or(0),
                )
            }

            /// Getter for the [`uncompressed_size` field](FileMetadata#structfield.uncompressed_size).
            #[inline]
            pub fn uncompressed_size(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(
                    self.0
                        .access(3, "FileMetadata", "uncompressed_size")?
                        .unwrap_or(0),
                )
            }

            /// Getter for the [`linkname` field](FileMetadata#structfield.linkname).
            #[inline]
            pub fn linkname(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(4, "FileMetadata", "linkname")
            }

            /// Getter for the [`mode` field](FileMetadata#structfield.mode).
            #[inline]
            pub fn mode(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(self.0.access(5, "FileMetadata", "mode")?.unwrap_or(0))
            }

            /// Getter for the [`uid` field](FileMetadata#structfield.uid).
            #[inline]
            pub fn uid(&self) -> ::planus::Result<u32> {
                ::core::result::Result::Ok(self.0.access(6, "FileMetadata", "uid")?.unwrap_or(0))
            }

            /// Getter for the [`gid` field](FileMetadata#structfield.gid).
            #[inline]
            pub fn gid(&self) -> ::planus::Result<u32> {
                ::core::result::Result::Ok(self.0.access(7, "FileMetadata", "gid")?.unwrap_or(0))
            }

            /// Getter for the [`uname` field](FileMetadata#structfield.uname).
            #[inline]
            pub fn uname(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(8, "FileMetadata", "uname")
            }

            /// Getter for the [`gname` field](FileMetadata#structfield.gname).
            #[inline]
            pub fn gname(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(9, "FileMetadata", "gname")
            }

            /// Getter for the [`mod_time` field](FileMetadata#structfield.mod_time).
            #[inline]
            pub fn mod_time(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(10, "FileMetadata", "mod_time")
            }

            /// Getter for the [`devmajor` field](FileMetadata#structfield.devmajor).
            #[inline]
            pub fn devmajor(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(
                    self.0.access(11, "FileMetadata", "devmajor")?.unwrap_or(0),
                )
            }

            /// Getter for the [`devminor` field](FileMetadata#structfield.devminor).
            #[inline]
            pub fn devminor(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(
                    self.0.access(12, "FileMetadata", "devminor")?.unwrap_or(0),
                )
            }

            /// Getter for the [`xattrs` field](FileMetadata#structfield.xattrs).
            #[inline]
            pub fn xattrs(
                &self,
            ) -> ::planus::Result<
                ::core::option::Option<::planus::Vector<'a, ::planus::Result<self::XattrRef<'a>>>>,
            > {
                self.0.access(13, "FileMetadata", "xattrs")
            }
        }

        impl<'a> ::core::fmt::Debug for FileMetadataRef<'a> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut f = f.debug_struct("FileMetadataRef");
                if let ::core::option::Option::Some(field_name) = self.name().transpose() {
                    f.field("name", &field_name);
                }
                if let ::core::option::Option::Some(field_type_) = self.type_().transpose() {
                    f.field("type_", &field_type_);
                }
                f.field("uncompressed_offset", &self.uncompressed_offset());
                f.field("uncompressed_size", &self.uncompressed_size());
                if let ::core::option::Option::Some(field_linkname) = self.linkname().transpose() {
                    f.field("linkname", &field_linkname);
                }
                f.field("mode", &self.mode());
                f.field("uid", &self.uid());
                f.field("gid", &self.gid());
                if let ::core::option::Option::Some(field_uname) = self.uname().transpose() {
                    f.field("uname", &field_uname);
                }
                if let ::core::option::Option::Some(field_gname) = self.gname().transpose() {
                    f.field("gname", &field_gname);
                }
                if let ::core::option::Option::Some(field_mod_time) = self.mod_time().transpose() {
                    f.field("mod_time", &field_mod_time);
                }
                f.field("devmajor", &self.devmajor());
                f.field("devminor", &self.devminor());
                if let ::core::option::Option::Some(field_xattrs) = self.xattrs().transpose() {
                    f.field("xattrs", &field_xattrs);
                }
                f.finish()
            }
        }

        impl<'a> ::core::convert::TryFrom<FileMetadataRef<'a>> for FileMetadata {
            type Error = ::planus::Error;

            #[allow(unreachable_code)]
            fn try_from(value: FileMetadataRef<'a>) -> ::planus::Result<Self> {
                ::core::result::Result::Ok(Self {
                    name: value.name()?.map(::core::convert::Into::into),
                    type_: value.type_()?.map(::core::convert::Into::into),
                    uncompressed_offset: ::core::convert::TryInto::try_into(
                        value.uncompressed_offset()?,
                    )?,
                    uncompressed_size: ::core::convert::TryInto::try_into(
                        value.uncompressed_size()?,
                    )?,
                    linkname: value.linkname()?.map(::core::convert::Into::into),
                    mode: ::core::convert::TryInto::try_into(value.mode()?)?,
                    uid: ::core::convert::TryInto::try_into(value.uid()?)?,
                    gid: ::core::convert::TryInto::try_into(value.gid()?)?,
                    uname: value.uname()?.map(::core::convert::Into::into),
                    gname: value.gname()?.map(::core::convert::Into::into),
                    mod_time: value.mod_time()?.map(::core::convert::Into::into),
                    devmajor: ::core::convert::TryInto::try_into(value.devmajor()?)?,
                    devminor: ::core::convert::TryInto::try_into(value.devminor()?)?,
                    xattrs: if let ::core::option::Option::Some(xattrs) = value.xattrs()? {
                        ::core::option::Option::Some(xattrs.to_vec_result()?)
                    } else {
                        ::core::option::Option::None
                    },
                })
            }
        }

        impl<'a> ::planus::TableRead<'a> for FileMetadataRef<'a> {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                ::core::result::Result::Ok(Self(::planus::table_reader::Table::from_buffer(
                    buffer, offset,
                )?))
            }
        }

        impl<'a> ::planus::VectorReadInner<'a> for FileMetadataRef<'a> {
            type Error = ::planus::Error;
            const STRIDE: usize = 4;

            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(buffer, offset).map_err(|error_kind| {
                    error_kind.with_error_location(
                        "[FileMetadataRef]",
                        "get",
                        buffer.offset_from_start,
                    )
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<::planus::Offset<FileMetadata>> for FileMetadata {
            type Value = ::planus::Offset<FileMetadata>;
            const STRIDE: usize = 4;
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> Self::Value {
                ::planus::WriteAs::prepare(self, builder)
            }

            #[inline]
            unsafe fn write_values(
                values: &[::planus::Offset<FileMetadata>],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 4];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - (Self::STRIDE * i) as u32,
                    );
                }
            }
        }

        impl<'a> ::planus::ReadAsRoot<'a> for FileMetadataRef<'a> {
            fn read_as_root(slice: &'a [u8]) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(
                    ::planus::SliceWithStartOffset {
                        buffer: slice,
                        offset_from_start: 0,
                    },
                    0,
                )
                .map_err(|error_kind| {
                    error_kind.with_error_location("[FileMetadataRef]", "read_as_root", 0)
                })
            }
        }

        /// The table `TOC` in the namespace `ztoc`
        ///
        /// Generated from these locations:
        /// * Table `TOC` in the file `fbs/ztoc.fbs:36`
        #[derive(
            Clone,
            Debug,
            PartialEq,
            PartialOrd,
            Eq,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        pub struct Toc {
            /// The field `metadata` in the table `TOC`
            pub metadata: ::core::option::Option<::planus::alloc::vec::Vec<self::FileMetadata>>,
        }

        #[allow(clippy::derivable_impls)]
        impl ::core::default::Default for Toc {
            fn default() -> Self {
                Self {
                    metadata: ::core::default::Default::default(),
                }
            }
        }

        impl Toc {
            /// Creates a [TocBuilder] for serializing an instance of this table.
            #[inline]
            pub fn builder() -> TocBuilder<()> {
                TocBuilder(())
            }

            #[allow(clippy::too_many_arguments)]
            pub fn create(
                builder: &mut ::planus::Builder,
                field_metadata: impl ::planus::WriteAsOptional<
                    ::planus::Offset<[::planus::Offset<self::FileMetadata>]>,
                >,
            ) -> ::planus::Offset<Self> {
                let prepared_metadata = field_metadata.prepare(builder);

                let mut table_writer: ::planus::table_writer::TableWriter<6> =
                    ::core::default::Default::default();
                if prepared_metadata.is_some() {
                    table_writer
                        .write_entry::<::planus::Offset<[::planus::Offset<self::FileMetadata>]>>(0);
                }

                unsafe {
                    table_writer.finish(builder, |object_writer| {
                        if let ::core::option::Option::Some(prepared_metadata) = prepared_metadata {
                            object_writer.write::<_, _, 4>(&prepared_metadata);
                        }
                    });
                }
                builder.current_offset()
            }
        }

        impl ::planus::WriteAs<::planus::Offset<Toc>> for Toc {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Toc> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl ::planus::WriteAsOptional<::planus::Offset<Toc>> for Toc {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<Toc>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl ::planus::WriteAsOffset<Toc> for Toc {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Toc> {
                Toc::create(builder, &self.metadata)
            }
        }

        /// Builder for serializing an instance of the [Toc] type.
        ///
        /// Can be created using the [Toc::builder] method.
        #[derive(Debug)]
        #[must_use]
        pub struct TocBuilder<State>(State);

        impl TocBuilder<()> {
            /// Setter for the [`metadata` field](Toc#structfield.metadata).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn metadata<T0>(self, value: T0) -> TocBuilder<(T0,)>
            where
                T0: ::planus::WriteAsOptional<
                    ::planus::Offset<[::planus::Offset<self::FileMetadata>]>,
                >,
            {
                TocBuilder((value,))
            }

            /// Sets the [`metadata` field](Toc#structfield.metadata) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn metadata_as_null(self) -> TocBuilder<((),)> {
                self.metadata(())
            }
        }

        impl<T0> TocBuilder<(T0,)> {
            /// Finish writing the builder to get an [Offset](::planus::Offset) to a serialized [Toc].
            #[inline]
            pub fn finish(self, builder: &mut ::planus::Builder) -> ::planus::Offset<Toc>
            where
                Self: ::planus::WriteAsOffset<Toc>,
            {
                ::planus::WriteAsOffset::prepare(&self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::FileMetadata>]>>,
            > ::planus::WriteAs<::planus::Offset<Toc>> for TocBuilder<(T0,)>
        {
            type Prepared = ::planus::Offset<Toc>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Toc> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::FileMetadata>]>>,
            > ::planus::WriteAsOptional<::planus::Offset<Toc>> for TocBuilder<(T0,)>
        {
            type Prepared = ::planus::Offset<Toc>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<Toc>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<self::FileMetadata>]>>,
            > ::planus::WriteAsOffset<Toc> for TocBuilder<(T0,)>
        {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Toc> {
                let (v0,) = &self.0;
                Toc::create(builder, v0)
            }
        }

        /// Reference to a deserialized [Toc].
        #[derive(Copy, Clone)]
        pub struct TocRef<'a>(#[allow(dead_code)] ::planus::table_reader::Table<'a>);

        impl<'a> TocRef<'a> {
            /// Getter for the [`metadata` field](Toc#structfield.metadata).
            #[inline]
            pub fn metadata(
                &self,
            ) -> ::planus::Result<
                ::core::option::Option<
                    ::planus::Vector<'a, ::planus::Result<self::FileMetadataRef<'a>>>,
                >,
            > {
                self.0.access(0, "Toc", "metadata")
            }
        }

        impl<'a> ::core::fmt::Debug for TocRef<'a> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut f = f.debug_struct("TocRef");
                if let ::core::option::Option::Some(field_metadata) = self.metadata().transpose() {
                    f.field("metadata", &field_metadata);
                }
                f.finish()
            }
        }

        impl<'a> ::core::convert::TryFrom<TocRef<'a>> for Toc {
            type Error = ::planus::Error;

            #[allow(unreachable_code)]
            fn try_from(value: TocRef<'a>) -> ::planus::Result<Self> {
                ::core::result::Result::Ok(Self {
                    metadata: if let ::core::option::Option::Some(metadata) = value.metadata()? {
                        ::core::option::Option::Some(metadata.to_vec_result()?)
                    } else {
                        ::core::option::Option::None
                    },
                })
            }
        }

        impl<'a> ::planus::TableRead<'a> for TocRef<'a> {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                ::core::result::Result::Ok(Self(::planus::table_reader::Table::from_buffer(
                    buffer, offset,
                )?))
            }
        }

        impl<'a> ::planus::VectorReadInner<'a> for TocRef<'a> {
            type Error = ::planus::Error;
            const STRIDE: usize = 4;

            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(buffer, offset).map_err(|error_kind| {
                    error_kind.with_error_location("[TocRef]", "get", buffer.offset_from_start)
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<::planus::Offset<Toc>> for Toc {
            type Value = ::planus::Offset<Toc>;
            const STRIDE: usize = 4;
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> Self::Value {
                ::planus::WriteAs::prepare(self, builder)
            }

            #[inline]
            unsafe fn write_values(
                values: &[::planus::Offset<Toc>],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 4];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - (Self::STRIDE * i) as u32,
                    );
                }
            }
        }

        impl<'a> ::planus::ReadAsRoot<'a> for TocRef<'a> {
            fn read_as_root(slice: &'a [u8]) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(
                    ::planus::SliceWithStartOffset {
                        buffer: slice,
                        offset_from_start: 0,
                    },
                    0,
                )
                .map_err(|error_kind| error_kind.with_error_location("[TocRef]", "read_as_root", 0))
            }
        }

        /// The table `CompressionInfo` in the namespace `ztoc`
        ///
        /// Generated from these locations:
        /// * Table `CompressionInfo` in the file `fbs/ztoc.fbs:40`
        #[derive(
            Clone,
            Debug,
            PartialEq,
            PartialOrd,
            Eq,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        pub struct CompressionInfo {
            /// The field `compression_algorithm` in the table `CompressionInfo`
            pub compression_algorithm: self::CompressionAlgorithm,
            /// The field `max_span_id` in the table `CompressionInfo`
            pub max_span_id: i32,
            /// The field `span_digests` in the table `CompressionInfo`
            pub span_digests:
                ::core::option::Option<::planus::alloc::vec::Vec<::planus::alloc::string::String>>,
            /// The field `checkpoints` in the table `CompressionInfo`
            pub checkpoints: ::core::option::Option<::planus::alloc::vec::Vec<u8>>,
        }

        #[allow(clippy::derivable_impls)]
        impl ::core::default::Default for CompressionInfo {
            fn default() -> Self {
                Self {
                    compression_algorithm: self::CompressionAlgorithm::Gzip,
                    max_span_id: 0,
                    span_digests: ::core::default::Default::default(),
                    checkpoints: ::core::default::Default::default(),
                }
            }
        }

        impl CompressionInfo {
            /// Creates a [CompressionInfoBuilder] for serializing an instance of this table.
            #[inline]
            pub fn builder() -> CompressionInfoBuilder<()> {
                CompressionInfoBuilder(())
            }

            #[allow(clippy::too_many_arguments)]
            pub fn create(
                builder: &mut ::planus::Builder,
                field_compression_algorithm: impl ::planus::WriteAsDefault<
                    self::CompressionAlgorithm,
                    self::CompressionAlgorithm,
                >,
                field_max_span_id: impl ::planus::WriteAsDefault<i32, i32>,
                field_span_digests: impl ::planus::WriteAsOptional<
                    ::planus::Offset<[::planus::Offset<str>]>,
                >,
                field_checkpoints: impl ::planus::WriteAsOptional<::planus::Offset<[u8]>>,
            ) -> ::planus::Offset<Self> {
                let prepared_compression_algorithm =
                    field_compression_algorithm.prepare(builder, &self::CompressionAlgorithm::Gzip);
                let prepared_max_span_id = field_max_span_id.prepare(builder, &0);
                let prepared_span_digests = field_span_digests.prepare(builder);
                let prepared_checkpoints = field_checkpoints.prepare(builder);

                let mut table_writer: ::planus::table_writer::TableWriter<12> =
                    ::core::default::Default::default();
                if prepared_max_span_id.is_some() {
                    table_writer.write_entry::<i32>(1);
                }
                if prepared_span_digests.is_some() {
                    table_writer.write_entry::<::planus::Offset<[::planus::Offset<str>]>>(2);
                }
                if prepared_checkpoints.is_some() {
                    table_writer.write_entry::<::planus::Offset<[u8]>>(3);
                }
                if prepared_compression_algorithm.is_some() {
                    table_writer.write_entry::<self::CompressionAlgorithm>(0);
                }

                unsafe {
                    table_writer.finish(builder, |object_writer| {
                        if let ::core::option::Option::Some(prepared_max_span_id) =
                            prepared_max_span_id
                        {
                            object_writer.write::<_, _, 4>(&prepared_max_span_id);
                        }
                        if let ::core::option::Option::Some(prepared_span_digests) =
                            prepared_span_digests
                        {
                            object_writer.write::<_, _, 4>(&prepared_span_digests);
                        }
                        if let ::core::option::Option::Some(prepared_checkpoints) =
                            prepared_checkpoints
                        {
                            object_writer.write::<_, _, 4>(&prepared_checkpoints);
                        }
                        if let ::core::option::Option::Some(prepared_compression_algorithm) =
                            prepared_compression_algorithm
                        {
                            object_writer.write::<_, _, 1>(&prepared_compression_algorithm);
                        }
                    });
                }
                builder.current_offset()
            }
        }

        impl ::planus::WriteAs<::planus::Offset<CompressionInfo>> for CompressionInfo {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::planus::Offset<CompressionInfo> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl ::planus::WriteAsOptional<::planus::Offset<CompressionInfo>> for CompressionInfo {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<CompressionInfo>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl ::planus::WriteAsOffset<CompressionInfo> for CompressionInfo {
            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::planus::Offset<CompressionInfo> {
                CompressionInfo::create(
                    builder,
                    self.compression_algorithm,
                    self.max_span_id,
                    &self.span_digests,
                    &self.checkpoints,
                )
            }
        }

        /// Builder for serializing an instance of the [CompressionInfo] type.
        ///
        /// Can be created using the [CompressionInfo::builder] method.
        #[derive(Debug)]
        #[must_use]
        pub struct CompressionInfoBuilder<State>(State);

        impl CompressionInfoBuilder<()> {
            /// Setter for the [`compression_algorithm` field](CompressionInfo#structfield.compression_algorithm).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn compression_algorithm<T0>(self, value: T0) -> CompressionInfoBuilder<(T0,)>
            where
                T0: ::planus::WriteAsDefault<
                    self::CompressionAlgorithm,
                    self::CompressionAlgorithm,
                >,
            {
                CompressionInfoBuilder((value,))
            }

            /// Sets the [`compression_algorithm` field](CompressionInfo#structfield.compression_algorithm) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn compression_algorithm_as_default(
                self,
            ) -> CompressionInfoBuilder<(::planus::DefaultValue,)> {
                self.compression_algorithm(::planus::DefaultValue)
            }
        }

        impl<T0> CompressionInfoBuilder<(T0,)> {
            /// Setter for the [`max_span_id` field](CompressionInfo#structfield.max_span_id).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn max_span_id<T1>(self, value: T1) -> CompressionInfoBuilder<(T0, T1)>
            where
                T1: ::planus::WriteAsDefault<i32, i32>,
            {
                let (v0,) = self.0;
                CompressionInfoBuilder((v0, value))
            }

            /// Sets the [`max_span_id` field](CompressionInfo#structfield.max_span_id) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn max_span_id_as_default(
                self,
            ) -> CompressionInfoBuilder<(T0, ::planus::DefaultValue)> {
                self.max_span_id(::planus::DefaultValue)
            }
        }

        impl<T0, T1> CompressionInfoBuilder<(T0, T1)> {
            /// Setter for the [`span_digests` field](CompressionInfo#structfield.span_digests).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn span_digests<T2>(self, value: T2) -> CompressionInfoBuilder<(T0, T1, T2)>
            where
                T2: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<str>]>>,
            {
                let (v0, v1) = self.0;
                CompressionInfoBuilder((v0, v1, value))
            }

            /// Sets the [`span_digests` field](CompressionInfo#structfield.span_digests) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn span_digests_as_null(self) -> CompressionInfoBuilder<(T0, T1, ())> {
                self.span_digests(())
            }
        }

        impl<T0, T1, T2> CompressionInfoBuilder<(T0, T1, T2)> {
            /// Setter for the [`checkpoints` field](CompressionInfo#structfield.checkpoints).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn checkpoints<T3>(self, value: T3) -> CompressionInfoBuilder<(T0, T1, T2, T3)>
            where
                T3: ::planus::WriteAsOptional<::planus::Offset<[u8]>>,
            {
                let (v0, v1, v2) = self.0;
                CompressionInfoBuilder((v0, v1, v2, value))
            }

            /// Sets the [`checkpoints` field](CompressionInfo#structfield.checkpoints) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn checkpoints_as_null(self) -> CompressionInfoBuilder<(T0, T1, T2, ())> {
                self.checkpoints(())
            }
        }

        impl<T0, T1, T2, T3> CompressionInfoBuilder<(T0, T1, T2, T3)> {
            /// Finish writing the builder to get an [Offset](::planus::Offset) to a serialized [CompressionInfo].
            #[inline]
            pub fn finish(
                self,
                builder: &mut ::planus::Builder,
            ) -> ::planus::Offset<CompressionInfo>
            where
                Self: ::planus::WriteAsOffset<CompressionInfo>,
            {
                ::planus::WriteAsOffset::prepare(&self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsDefault<self::CompressionAlgorithm, self::CompressionAlgorithm>,
                T1: ::planus::WriteAsDefault<i32, i32>,
                T2: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<str>]>>,
                T3: ::planus::WriteAsOptional<::planus::Offset<[u8]>>,
            > ::planus::WriteAs<::planus::Offset<CompressionInfo>>
            for CompressionInfoBuilder<(T0, T1, T2, T3)>
        {
            type Prepared = ::planus::Offset<CompressionInfo>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::planus::Offset<CompressionInfo> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsDefault<self::CompressionAlgorithm, self::CompressionAlgorithm>,
                T1: ::planus::WriteAsDefault<i32, i32>,
                T2: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<str>]>>,
                T3: ::planus::WriteAsOptional<::planus::Offset<[u8]>>,
            > ::planus::WriteAsOptional<::planus::Offset<CompressionInfo>>
            for CompressionInfoBuilder<(T0, T1, T2, T3)>
        {
            type Prepared = ::planus::Offset<CompressionInfo>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<CompressionInfo>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl<
                T0: ::planus::WriteAsDefault<self::CompressionAlgorithm, self::CompressionAlgorithm>,
                T1: ::planus::WriteAsDefault<i32, i32>,
                T2: ::planus::WriteAsOptional<::planus::Offset<[::planus::Offset<str>]>>,
                T3: ::planus::WriteAsOptional<::planus::Offset<[u8]>>,
            > ::planus::WriteAsOffset<CompressionInfo>
            for CompressionInfoBuilder<(T0, T1, T2, T3)>
        {
            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::planus::Offset<CompressionInfo> {
                let (v0, v1, v2, v3) = &self.0;
                CompressionInfo::create(builder, v0, v1, v2, v3)
            }
        }

        /// Reference to a deserialized [CompressionInfo].
        #[derive(Copy, Clone)]
        pub struct CompressionInfoRef<'a>(#[allow(dead_code)] ::planus::table_reader::Table<'a>);

        impl<'a> CompressionInfoRef<'a> {
            /// Getter for the [`compression_algorithm` field](CompressionInfo#structfield.compression_algorithm).
            #[inline]
            pub fn compression_algorithm(&self) -> ::planus::Result<self::CompressionAlgorithm> {
                ::core::result::Result::Ok(
                    self.0
                        .access(0, "CompressionInfo", "compression_algorithm")?
                        .unwrap_or(self::CompressionAlgorithm::Gzip),
                )
            }

            /// Getter for the [`max_span_id` field](CompressionInfo#structfield.max_span_id).
            #[inline]
            pub fn max_span_id(&self) -> ::planus::Result<i32> {
                ::core::result::Result::Ok(
                    self.0
                        .access(1, "CompressionInfo", "max_span_id")?
                        .unwrap_or(0),
                )
            }

            /// Getter for the [`span_digests` field](CompressionInfo#structfield.span_digests).
            #[inline]
            pub fn span_digests(
                &self,
            ) -> ::planus::Result<
                ::core::option::Option<
                    ::planus::Vector<'a, ::planus::Result<&'a ::core::primitive::str>>,
                >,
            > {
                self.0.access(2, "CompressionInfo", "span_digests")
            }

            /// Getter for the [`checkpoints` field](CompressionInfo#structfield.checkpoints).
            #[inline]
            pub fn checkpoints(&self) -> ::planus::Result<::core::option::Option<&'a [u8]>> {
                self.0.access(3, "CompressionInfo", "checkpoints")
            }
        }

        impl<'a> ::core::fmt::Debug for CompressionInfoRef<'a> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut f = f.debug_struct("CompressionInfoRef");
                f.field("compression_algorithm", &self.compression_algorithm());
                f.field("max_span_id", &self.max_span_id());
                if let ::core::option::Option::Some(field_span_digests) =
                    self.span_digests().transpose()
                {
                    f.field("span_digests", &field_span_digests);
                }
                if let ::core::option::Option::Some(field_checkpoints) =
                    self.checkpoints().transpose()
                {
                    f.field("checkpoints", &field_checkpoints);
                }
                f.finish()
            }
        }

        impl<'a> ::core::convert::TryFrom<CompressionInfoRef<'a>> for CompressionInfo {
            type Error = ::planus::Error;

            #[allow(unreachable_code)]
            fn try_from(value: CompressionInfoRef<'a>) -> ::planus::Result<Self> {
                ::core::result::Result::Ok(Self {
                    compression_algorithm: ::core::convert::TryInto::try_into(
                        value.compression_algorithm()?,
                    )?,
                    max_span_id: ::core::convert::TryInto::try_into(value.max_span_id()?)?,
                    span_digests: if let ::core::option::Option::Some(span_digests) =
                        value.span_digests()?
                    {
                        ::core::option::Option::Some(span_digests.to_vec_result()?)
                    } else {
                        ::core::option::Option::None
                    },
                    checkpoints: value.checkpoints()?.map(|v| v.to_vec()),
                })
            }
        }

        impl<'a> ::planus::TableRead<'a> for CompressionInfoRef<'a> {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                ::core::result::Result::Ok(Self(::planus::table_reader::Table::from_buffer(
                    buffer, offset,
                )?))
            }
        }

        impl<'a> ::planus::VectorReadInner<'a> for CompressionInfoRef<'a> {
            type Error = ::planus::Error;
            const STRIDE: usize = 4;

            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(buffer, offset).map_err(|error_kind| {
                    error_kind.with_error_location(
                        "[CompressionInfoRef]",
                        "get",
                        buffer.offset_from_start,
                    )
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<::planus::Offset<CompressionInfo>> for CompressionInfo {
            type Value = ::planus::Offset<CompressionInfo>;
            const STRIDE: usize = 4;
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> Self::Value {
                ::planus::WriteAs::prepare(self, builder)
            }

            #[inline]
            unsafe fn write_values(
                values: &[::planus::Offset<CompressionInfo>],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 4];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - (Self::STRIDE * i) as u32,
                    );
                }
            }
        }

        impl<'a> ::planus::ReadAsRoot<'a> for CompressionInfoRef<'a> {
            fn read_as_root(slice: &'a [u8]) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(
                    ::planus::SliceWithStartOffset {
                        buffer: slice,
                        offset_from_start: 0,
                    },
                    0,
                )
                .map_err(|error_kind| {
                    error_kind.with_error_location("[CompressionInfoRef]", "read_as_root", 0)
                })
            }
        }

        /// The table `Ztoc` in the namespace `ztoc`
        ///
        /// Generated from these locations:
        /// * Table `Ztoc` in the file `fbs/ztoc.fbs:47`
        #[derive(
            Clone,
            Debug,
            PartialEq,
            PartialOrd,
            Eq,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        pub struct Ztoc {
            /// The field `version` in the table `Ztoc`
            pub version: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `build_tool_identifier` in the table `Ztoc`
            pub build_tool_identifier: ::core::option::Option<::planus::alloc::string::String>,
            /// The field `compressed_archive_size` in the table `Ztoc`
            pub compressed_archive_size: i64,
            /// The field `uncompressed_archive_size` in the table `Ztoc`
            pub uncompressed_archive_size: i64,
            /// The field `toc` in the table `Ztoc`
            pub toc: ::core::option::Option<::planus::alloc::boxed::Box<self::Toc>>,
            /// The field `compression_info` in the table `Ztoc`
            pub compression_info:
                ::core::option::Option<::planus::alloc::boxed::Box<self::CompressionInfo>>,
        }

        #[allow(clippy::derivable_impls)]
        impl ::core::default::Default for Ztoc {
            fn default() -> Self {
                Self {
                    version: ::core::default::Default::default(),
                    build_tool_identifier: ::core::default::Default::default(),
                    compressed_archive_size: 0,
                    uncompressed_archive_size: 0,
                    toc: ::core::default::Default::default(),
                    compression_info: ::core::default::Default::default(),
                }
            }
        }

        impl Ztoc {
            /// Creates a [ZtocBuilder] for serializing an instance of this table.
            #[inline]
            pub fn builder() -> ZtocBuilder<()> {
                ZtocBuilder(())
            }

            #[allow(clippy::too_many_arguments)]
            pub fn create(
                builder: &mut ::planus::Builder,
                field_version: impl ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                field_build_tool_identifier: impl ::planus::WriteAsOptional<
                    ::planus::Offset<::core::primitive::str>,
                >,
                field_compressed_archive_size: impl ::planus::WriteAsDefault<i64, i64>,
                field_uncompressed_archive_size: impl ::planus::WriteAsDefault<i64, i64>,
                field_toc: impl ::planus::WriteAsOptional<::planus::Offset<self::Toc>>,
                field_compression_info: impl ::planus::WriteAsOptional<
                    ::planus::Offset<self::CompressionInfo>,
                >,
            ) -> ::planus::Offset<Self> {
                let prepared_version = field_version.prepare(builder);
                let prepared_build_tool_identifier = field_build_tool_identifier.prepare(builder);
                let prepared_compressed_archive_size =
                    field_compressed_archive_size.prepare(builder, &0);
                let prepared_uncompressed_archive_size =
                    field_uncompressed_archive_size.prepare(builder, &0);
                let prepared_toc = field_toc.prepare(builder);
                let prepared_compression_info = field_compression_info.prepare(builder);

                let mut table_writer: ::planus::table_writer::TableWriter<16> =
                    ::core::default::Default::default();
                if prepared_compressed_archive_size.is_some() {
                    table_writer.write_entry::<i64>(2);
                }
                if prepared_uncompressed_archive_size.is_some() {
                    table_writer.write_entry::<i64>(3);
                }
                if prepared_version.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(0);
                }
                if prepared_build_tool_identifier.is_some() {
                    table_writer.write_entry::<::planus::Offset<str>>(1);
                }
                if prepared_toc.is_some() {
                    table_writer.write_entry::<::planus::Offset<self::Toc>>(4);
                }
                if prepared_compression_info.is_some() {
                    table_writer.write_entry::<::planus::Offset<self::CompressionInfo>>(5);
                }

                unsafe {
                    table_writer.finish(builder, |object_writer| {
                        if let ::core::option::Option::Some(prepared_compressed_archive_size) =
                            prepared_compressed_archive_size
                        {
                            object_writer.write::<_, _, 8>(&prepared_compressed_archive_size);
                        }
                        if let ::core::option::Option::Some(prepared_uncompressed_archive_size) =
                            prepared_uncompressed_archive_size
                        {
                            object_writer.write::<_, _, 8>(&prepared_uncompressed_archive_size);
                        }
                        if let ::core::option::Option::Some(prepared_version) = prepared_version {
                            object_writer.write::<_, _, 4>(&prepared_version);
                        }
                        if let ::core::option::Option::Some(prepared_build_tool_identifier) =
                            prepared_build_tool_identifier
                        {
                            object_writer.write::<_, _, 4>(&prepared_build_tool_identifier);
                        }
                        if let ::core::option::Option::Some(prepared_toc) = prepared_toc {
                            object_writer.write::<_, _, 4>(&prepared_toc);
                        }
                        if let ::core::option::Option::Some(prepared_compression_info) =
                            prepared_compression_info
                        {
                            object_writer.write::<_, _, 4>(&prepared_compression_info);
                        }
                    });
                }
                builder.current_offset()
            }
        }

        impl ::planus::WriteAs<::planus::Offset<Ztoc>> for Ztoc {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Ztoc> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl ::planus::WriteAsOptional<::planus::Offset<Ztoc>> for Ztoc {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<Ztoc>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl ::planus::WriteAsOffset<Ztoc> for Ztoc {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Ztoc> {
                Ztoc::create(
                    builder,
                    &self.version,
                    &self.build_tool_identifier,
                    self.compressed_archive_size,
                    self.uncompressed_archive_size,
                    &self.toc,
                    &self.compression_info,
                )
            }
        }

        /// Builder for serializing an instance of the [Ztoc] type.
        ///
        /// Can be created using the [Ztoc::builder] method.
        #[derive(Debug)]
        #[must_use]
        pub struct ZtocBuilder<State>(State);

        impl ZtocBuilder<()> {
            /// Setter for the [`version` field](Ztoc#structfield.version).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn version<T0>(self, value: T0) -> ZtocBuilder<(T0,)>
            where
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                ZtocBuilder((value,))
            }

            /// Sets the [`version` field](Ztoc#structfield.version) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn version_as_null(self) -> ZtocBuilder<((),)> {
                self.version(())
            }
        }

        impl<T0> ZtocBuilder<(T0,)> {
            /// Setter for the [`build_tool_identifier` field](Ztoc#structfield.build_tool_identifier).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn build_tool_identifier<T1>(self, value: T1) -> ZtocBuilder<(T0, T1)>
            where
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
            {
                let (v0,) = self.0;
                ZtocBuilder((v0, value))
            }

            /// Sets the [`build_tool_identifier` field](Ztoc#structfield.build_tool_identifier) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn build_tool_identifier_as_null(self) -> ZtocBuilder<(T0, ())> {
                self.build_tool_identifier(())
            }
        }

        impl<T0, T1> ZtocBuilder<(T0, T1)> {
            /// Setter for the [`compressed_archive_size` field](Ztoc#structfield.compressed_archive_size).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn compressed_archive_size<T2>(self, value: T2) -> ZtocBuilder<(T0, T1, T2)>
            where
                T2: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1) = self.0;
                ZtocBuilder((v0, v1, value))
            }

            /// Sets the [`compressed_archive_size` field](Ztoc#structfield.compressed_archive_size) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn compressed_archive_size_as_default(
                self,
            ) -> ZtocBuilder<(T0, T1, ::planus::DefaultValue)> {
                self.compressed_archive_size(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2> ZtocBuilder<(T0, T1, T2)> {
            /// Setter for the [`uncompressed_archive_size` field](Ztoc#structfield.uncompressed_archive_size).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uncompressed_archive_size<T3>(self, value: T3) -> ZtocBuilder<(T0, T1, T2, T3)>
            where
                T3: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1, v2) = self.0;
                ZtocBuilder((v0, v1, v2, value))
            }

            /// Sets the [`uncompressed_archive_size` field](Ztoc#structfield.uncompressed_archive_size) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn uncompressed_archive_size_as_default(
                self,
            ) -> ZtocBuilder<(T0, T1, T2, ::planus::DefaultValue)> {
                self.uncompressed_archive_size(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2, T3> ZtocBuilder<(T0, T1, T2, T3)> {
            /// Setter for the [`toc` field](Ztoc#structfield.toc).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn toc<T4>(self, value: T4) -> ZtocBuilder<(T0, T1, T2, T3, T4)>
            where
                T4: ::planus::WriteAsOptional<::planus::Offset<self::Toc>>,
            {
                let (v0, v1, v2, v3) = self.0;
                ZtocBuilder((v0, v1, v2, v3, value))
            }

            /// Sets the [`toc` field](Ztoc#structfield.toc) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn toc_as_null(self) -> ZtocBuilder<(T0, T1, T2, T3, ())> {
                self.toc(())
            }
        }

        impl<T0, T1, T2, T3, T4> ZtocBuilder<(T0, T1, T2, T3, T4)> {
            /// Setter for the [`compression_info` field](Ztoc#structfield.compression_info).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn compression_info<T5>(self, value: T5) -> ZtocBuilder<(T0, T1, T2, T3, T4, T5)>
            where
                T5: ::planus::WriteAsOptional<::planus::Offset<self::CompressionInfo>>,
            {
                let (v0, v1, v2, v3, v4) = self.0;
                ZtocBuilder((v0, v1, v2, v3, v4, value))
            }

            /// Sets the [`compression_info` field](Ztoc#structfield.compression_info) to null.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn compression_info_as_null(self) -> ZtocBuilder<(T0, T1, T2, T3, T4, ())> {
                self.compression_info(())
            }
        }

        impl<T0, T1, T2, T3, T4, T5> ZtocBuilder<(T0, T1, T2, T3, T4, T5)> {
            /// Finish writing the builder to get an [Offset](::planus::Offset) to a serialized [Ztoc].
            #[inline]
            pub fn finish(self, builder: &mut ::planus::Builder) -> ::planus::Offset<Ztoc>
            where
                Self: ::planus::WriteAsOffset<Ztoc>,
            {
                ::planus::WriteAsOffset::prepare(&self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T2: ::planus::WriteAsDefault<i64, i64>,
                T3: ::planus::WriteAsDefault<i64, i64>,
                T4: ::planus::WriteAsOptional<::planus::Offset<self::Toc>>,
                T5: ::planus::WriteAsOptional<::planus::Offset<self::CompressionInfo>>,
            > ::planus::WriteAs<::planus::Offset<Ztoc>> for ZtocBuilder<(T0, T1, T2, T3, T4, T5)>
        {
            type Prepared = ::planus::Offset<Ztoc>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Ztoc> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T2: ::planus::WriteAsDefault<i64, i64>,
                T3: ::planus::WriteAsDefault<i64, i64>,
                T4: ::planus::WriteAsOptional<::planus::Offset<self::Toc>>,
                T5: ::planus::WriteAsOptional<::planus::Offset<self::CompressionInfo>>,
            > ::planus::WriteAsOptional<::planus::Offset<Ztoc>>
            for ZtocBuilder<(T0, T1, T2, T3, T4, T5)>
        {
            type Prepared = ::planus::Offset<Ztoc>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<Ztoc>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl<
                T0: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T1: ::planus::WriteAsOptional<::planus::Offset<::core::primitive::str>>,
                T2: ::planus::WriteAsDefault<i64, i64>,
                T3: ::planus::WriteAsDefault<i64, i64>,
                T4: ::planus::WriteAsOptional<::planus::Offset<self::Toc>>,
                T5: ::planus::WriteAsOptional<::planus::Offset<self::CompressionInfo>>,
            > ::planus::WriteAsOffset<Ztoc> for ZtocBuilder<(T0, T1, T2, T3, T4, T5)>
        {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<Ztoc> {
                let (v0, v1, v2, v3, v4, v5) = &self.0;
                Ztoc::create(builder, v0, v1, v2, v3, v4, v5)
            }
        }

        /// Reference to a deserialized [Ztoc].
        #[derive(Copy, Clone)]
        pub struct ZtocRef<'a>(#[allow(dead_code)] ::planus::table_reader::Table<'a>);

        impl<'a> ZtocRef<'a> {
            /// Getter for the [`version` field](Ztoc#structfield.version).
            #[inline]
            pub fn version(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(0, "Ztoc", "version")
            }

            /// Getter for the [`build_tool_identifier` field](Ztoc#structfield.build_tool_identifier).
            #[inline]
            pub fn build_tool_identifier(
                &self,
            ) -> ::planus::Result<::core::option::Option<&'a ::core::primitive::str>> {
                self.0.access(1, "Ztoc", "build_tool_identifier")
            }

            /// Getter for the [`compressed_archive_size` field](Ztoc#structfield.compressed_archive_size).
            #[inline]
            pub fn compressed_archive_size(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(
                    self.0
                        .access(2, "Ztoc", "compressed_archive_size")?
                        .unwrap_or(0),
                )
            }

            /// Getter for the [`uncompressed_archive_size` field](Ztoc#structfield.uncompressed_archive_size).
            #[inline]
            pub fn uncompressed_archive_size(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(
                    self.0
                        .access(3, "Ztoc", "uncompressed_archive_size")?
                        .unwrap_or(0),
                )
            }

            /// Getter for the [`toc` field](Ztoc#structfield.toc).
            #[inline]
            pub fn toc(&self) -> ::planus::Result<::core::option::Option<self::TocRef<'a>>> {
                self.0.access(4, "Ztoc", "toc")
            }

            /// Getter for the [`compression_info` field](Ztoc#structfield.compression_info).
            #[inline]
            pub fn compression_info(
                &self,
            ) -> ::planus::Result<::core::option::Option<self::CompressionInfoRef<'a>>>
            {
                self.0.access(5, "Ztoc", "compression_info")
            }
        }

        impl<'a> ::core::fmt::Debug for ZtocRef<'a> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut f = f.debug_struct("ZtocRef");
                if let ::core::option::Option::Some(field_version) = self.version().transpose() {
                    f.field("version", &field_version);
                }
                if let ::core::option::Option::Some(field_build_tool_identifier) =
                    self.build_tool_identifier().transpose()
                {
                    f.field("build_tool_identifier", &field_build_tool_identifier);
                }
                f.field("compressed_archive_size", &self.compressed_archive_size());
                f.field(
                    "uncompressed_archive_size",
                    &self.uncompressed_archive_size(),
                );
                if let ::core::option::Option::Some(field_toc) = self.toc().transpose() {
                    f.field("toc", &field_toc);
                }
                if let ::core::option::Option::Some(field_compression_info) =
                    self.compression_info().transpose()
                {
                    f.field("compression_info", &field_compression_info);
                }
                f.finish()
            }
        }

        impl<'a> ::core::convert::TryFrom<ZtocRef<'a>> for Ztoc {
            type Error = ::planus::Error;

            #[allow(unreachable_code)]
            fn try_from(value: ZtocRef<'a>) -> ::planus::Result<Self> {
                ::core::result::Result::Ok(Self {
                    version: value.version()?.map(::core::convert::Into::into),
                    build_tool_identifier: value
                        .build_tool_identifier()?
                        .map(::core::convert::Into::into),
                    compressed_archive_size: ::core::convert::TryInto::try_into(
                        value.compressed_archive_size()?,
                    )?,
                    uncompressed_archive_size: ::core::convert::TryInto::try_into(
                        value.uncompressed_archive_size()?,
                    )?,
                    toc: if let ::core::option::Option::Some(toc) = value.toc()? {
                        ::core::option::Option::Some(::planus::alloc::boxed::Box::new(
                            ::core::convert::TryInto::try_into(toc)?,
                        ))
                    } else {
                        ::core::option::Option::None
                    },
                    compression_info: if let ::core::option::Option::Some(compression_info) =
                        value.compression_info()?
                    {
                        ::core::option::Option::Some(::planus::alloc::boxed::Box::new(
                            ::core::convert::TryInto::try_into(compression_info)?,
                        ))
                    } else {
                        ::core::option::Option::None
                    },
                })
            }
        }

        impl<'a> ::planus::TableRead<'a> for ZtocRef<'a> {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                ::core::result::Result::Ok(Self(::planus::table_reader::Table::from_buffer(
                    buffer, offset,
                )?))
            }
        }

        impl<'a> ::planus::VectorReadInner<'a> for ZtocRef<'a> {
            type Error = ::planus::Error;
            const STRIDE: usize = 4;

            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(buffer, offset).map_err(|error_kind| {
                    error_kind.with_error_location("[ZtocRef]", "get", buffer.offset_from_start)
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<::planus::Offset<Ztoc>> for Ztoc {
            type Value = ::planus::Offset<Ztoc>;
            const STRIDE: usize = 4;
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> Self::Value {
                ::planus::WriteAs::prepare(self, builder)
            }

            #[inline]
            unsafe fn write_values(
                values: &[::planus::Offset<Ztoc>],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 4];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - (Self::STRIDE * i) as u32,
                    );
                }
            }
        }

        impl<'a> ::planus::ReadAsRoot<'a> for ZtocRef<'a> {
            fn read_as_root(slice: &'a [u8]) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(
                    ::planus::SliceWithStartOffset {
                        buffer: slice,
                        offset_from_start: 0,
                    },
                    0,
                )
                .map_err(|error_kind| {
                    error_kind.with_error_location("[ZtocRef]", "read_as_root", 0)
                })
            }
        }
    }
}
